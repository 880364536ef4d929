# A vlalign stage run from a rule's `script:`, for rules whose arguments are lists of every partition's files:
# a shell command is one argument to bash, which Linux caps at 128 KiB (about 1,500 partition paths), while a
# script receives its arguments as data. The rule's params.argv is the command line `vlalign` would be given.
import os
import sys

from vlalign.cli import main

# Worker processes started by spawn run this file again as `__mp_main__`: only the first run is the stage.
if __name__ == "__main__":
    log = os.open(snakemake.log[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    # At the descriptors, as `> log 2>&1` would, so worker processes and native libraries write there too.
    os.dup2(log, sys.stdout.fileno())
    os.dup2(log, sys.stderr.fileno())
    sys.exit(main(list(map(str, snakemake.params.argv))))
