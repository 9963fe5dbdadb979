"""Stand-ins for the agents (and the check) of the race example."""

import json
import pathlib
import sys
import time

style = sys.argv[1]
answer = pathlib.Path("answer.txt")
if style == "check":
    sys.exit(not answer.exists() or answer.read_text().strip() != "6765")
sys.stdin.read()
usage = {"input_tokens": 1200, "output_tokens": 300, "usd": 0.002}
print(json.dumps({"loopvisor_usage": usage}), flush=True)
if style == "careful":
    time.sleep(120)  # too slow: killed when another attempt wins
elif style == "sloppy":
    answer.write_text("6764\n")  # wrong, then thinks it over for a long time
    time.sleep(120)
a, b = 0, 1
for _ in range(20):
    a, b = b, a + b
answer.write_text(f"{a}\n")
print(f"{style}: fib(20) = {a}")
