#!/usr/bin/env bash
# A small agent in bash that speaks the process protocol (docs/process-agents.md): the system
# tests' stub child. Its mode, the first argument, is how it misbehaves:
#   normal        joins, reports a participant and metrics, leaves on close
#   crash         joins, then exits 3
#   ignore-close  joins, then ignores close and SIGTERM (killed after its grace)
#   never-join    takes the session and never joins (the join deadline ends it)
#   hog           joins, then a grandchild holds 256 MB of memory (the tree's RSS counts)
#   finished      joins, reports metrics, says finished and exits 0
#   exit-after-metrics  joins, reports metrics and exits 0 at once (no finished)
#   alone         joins and nobody else comes (the idle timeout ends it)
#   v2            says it speaks protocol 2
#   deaf          says ready, starts a helper, then never reads its channel again (nor exits
#                 on its end)
set -u
mode=${1:-normal}
say() { printf '%s\n' "$1" >&3; }
if [[ $mode == v2 ]]; then say '{"type":"ready","protocol":2}'; sleep 30; exit 0; fi
say '{"type":"ready","protocol":1}'
if [[ $mode == deaf ]]; then sleep 3600 & exec sleep 3600; fi
IFS= read -r session <&3 || exit 0
echo "stub $mode pid $$ got $session"
[[ $mode == never-join ]] || say '{"type":"joined"}'
case $mode in
    crash) echo "stub crashing" >&2; exit 3 ;;
    ignore-close) trap '' TERM ;;
    hog) python3 -c 'import time; b = b"x" * (256 << 20); time.sleep(600)' & ;;
    finished)
        say '{"type":"metrics","counters":{"llm_output_tokens":7}}'
        say '{"type":"finished"}'
        exit 0 ;;
    exit-after-metrics)
        say '{"type":"metrics","counters":{"llm_output_tokens":9}}'
        exit 0 ;;
esac
[[ $mode == alone ]] || say '{"type":"participant_joined","participant_id":"p1"}'
say '{"type":"metrics","counters":{"llm_input_tokens":5},"latencies":{"llm_latency_ms":[250]}}'
while IFS= read -r message <&3; do
    case $message in
        *'"type":"close"'*)
            echo "stub $mode close $message"
            [[ $mode == ignore-close ]] || exit 0 ;;
    esac
done
[[ $mode == ignore-close ]] && while :; do sleep 1; done
exit 0
