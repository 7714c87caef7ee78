# A well-behaved reward worker whose reward encodes every request field, so a test can check what was sent:
# len(response_ids) + 10 if ground_truth is in the response + 0.5 if truncated + metadata["bonus"].
# Special responses misbehave on purpose: HANG sleeps, CRASH exits 1, GARBAGE / NOREWARD / NAN answer badly.
import json
import sys
import time

for line in sys.stdin:
    request = json.loads(line)
    response = request["response"]
    if "HANG" in response:
        time.sleep(3600)
    if "CRASH" in response:
        sys.exit(1)
    if "GARBAGE" in response:
        print("this is not json", flush=True)
        continue
    if "NOREWARD" in response:
        print(json.dumps({"score": 1.0}), flush=True)
        continue
    if "NAN" in response:
        print(json.dumps({"reward": float("nan")}), flush=True)  # Python writes NaN, which is not JSON
        continue
    reward = float(len(request["response_ids"]))
    if request["ground_truth"] and request["ground_truth"] in response:
        reward += 10
    if request["truncated"]:
        reward += 0.5
    if isinstance(request["metadata"], dict):
        reward += request["metadata"].get("bonus", 0)
    if request["prompt"] != "P":
        reward = -1000.0
    print(json.dumps({"reward": reward}), flush=True)
