"""Maps the top-level nodes/, gui/ and graphs/ folders to nodeflow.nodes, nodeflow.gui and nodeflow.graphs.

Every sub-package below them is found automatically, so adding a node pack
folder needs no packaging change.
"""

from setuptools import find_packages, setup

ROOTS = {"nodeflow": "nodeflow", "nodeflow.nodes": "nodes", "nodeflow.gui": "gui", "nodeflow.graphs": "graphs"}

packages = []
package_dir = {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        if name == "nodeflow" and sub.split(".")[0] in ("nodes", "gui", "graphs"):
            continue
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
