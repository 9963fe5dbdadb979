"""Stand-ins for the agents and the checks of the pipeline example."""

import pathlib
import sys

step = sys.argv[1]
app = pathlib.Path("app.py")
if step == "lint":
    sys.stdin.read()
    app.write_text(app.read_text().replace("x=1", "x = 1"))
    print("fixed 1 lint warning in app.py")
elif step == "build":
    before = sys.stdin.read().split("What ran before:", 1)[-1].strip()
    pathlib.Path("BUILD.txt").write_text(f"built from:\n{app.read_text()}\nafter:\n{before}\n")
    print("wrote BUILD.txt")
elif step == "check-lint":
    sys.exit("x=1" in app.read_text())
elif step == "check-build":
    build = pathlib.Path("BUILD.txt")
    sys.exit(not build.exists() or "x = 1" not in build.read_text())
