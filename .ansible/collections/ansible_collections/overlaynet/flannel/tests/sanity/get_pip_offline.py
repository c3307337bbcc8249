"""Stand-in for the get-pip.py that ansible-test downloads from a host unreachable here.

ansible-test runs this file with pip's arguments; ensurepip provides pip, which then
installs what was asked (from PyPI, which is reachable).
"""

import subprocess
import sys

subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
# get-pip.py's own flags mean nothing to pip install
args = [a for a in sys.argv[1:] if a not in ("--disable-pip-version-check", "--no-setuptools", "--no-wheel")]
if args:
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args], check=True)
