"""torchrun as `slm train --nproc` starts it: `torch.distributed.run`'s own entry point, minus one traceback.

Ctrl-C reaches torchrun's agent, which passes it on to the ranks (they finish the step, save `latest`
and stop) and then raises `SignalException` all the way up. `slm` reports the stop in one line, so
that traceback is left out; every other error, a rank's included, prints as torchrun prints it.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main

if __name__ == "__main__":
    try:
        main()
    except SignalException as e:
        sys.exit(128 + int(e.sigval))
