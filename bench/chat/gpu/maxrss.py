"""Runs a command, passes its output through, then prints one JSON line with the peak
resident memory of its process tree's largest process (getrusage's RUSAGE_CHILDREN
ru_maxrss), so run.sh records CPU memory the same way for both sides.

    python3 maxrss.py TAG CMD [ARGS...]
"""

import json
import resource
import subprocess
import sys

tag, cmd = sys.argv[1], sys.argv[2:]
rc = subprocess.run(cmd).returncode
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"side": "rss", "tag": tag, "peak_rss_mib": round(peak_kib / 1024, 1)}), flush=True)
sys.exit(rc)
