#!/usr/bin/env bash
# Make the working tree small enough to travel to the device machine, and put it back:
#   bash tools/device_tree.sh slim [KEEP]   on a clean tree: switch to a throw-away branch
#         `device-slim` whose one commit deletes every notebook's *_runs records except KEEP's
#         (default 03: notebook 03's, which its launch reads and extends)
#   bash tools/device_tree.sh restore       back to the branch you came from; device-slim deleted
# Why: a device call carries the working tree and its `carry` paths, 64 MiB in all; with the
# chapters' committed records (about 35 MB) beside notebook 03's and the two datasets notebook 03
# trains on (9 MB) the tree passed that limit (2026-11-28). Records the device makes from the slim
# tree name the device-slim commit in their provenance (git_commit); its lyabook/ is the commit
# it came from, which their source_sha256 (a hash of lyabook/ itself) confirms.
set -euo pipefail
case ${1:?usage: device_tree.sh slim [KEEP] | restore} in
    slim)
        keep=${2:-03}
        if ! git diff --quiet HEAD || [ -n "$(git ls-files --others --exclude-standard)" ]; then
            echo "commit or remove your changes first (the slim branch must hold exactly a commit of yours)"; exit 1
        fi
        from=$(git rev-parse --abbrev-ref HEAD)
        git switch -q -c device-slim
        drop=$(git ls-files -- 'notebooks/results/*_runs/*' | cut -d/ -f1-3 | sort -u | grep -v "/${keep}_" || true)
        [ -n "$drop" ] && git rm -rq $drop
        git commit -qm "device-slim (from $from $(git rev-parse --short "$from")): without the records of $(echo $drop | wc -w) other chapters"
        echo "$from" > "$(git rev-parse --git-dir)/device-slim-from"
        echo "on device-slim: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes tracked; 'bash tools/device_tree.sh restore' goes back to $from"
        ;;
    restore)
        from=$(cat "$(git rev-parse --git-dir)/device-slim-from" 2>/dev/null || echo main)
        git switch -q "$from" && git branch -q -D device-slim && rm -f "$(git rev-parse --git-dir)/device-slim-from"
        echo "back on $from"
        ;;
    *) echo "usage: device_tree.sh slim [KEEP] | restore"; exit 2 ;;
esac
