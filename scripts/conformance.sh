#!/usr/bin/env bash
# conformance.sh: run the ipfs/gateway-conformance suite against a real
# origin and edge on loopback, and print pass/fail per spec group.
#
#   1. the suite (v0.13.2, the newest release; boxo v0.43) is checked out,
#      built and its fixtures extracted once, into the cache directory;
#   2. an origin (--no-stripe --allow-incomplete: the fixtures leave blocks
#      out on purpose) and an edge (topcdn edge, Caddy embedded) start in a
#      temporary directory on 127.0.0.1;
#   3. the merged fixtures CAR is published with `topcdn publish --car`, the
#      IPNS records are PUT to the origin (the suite's invalid ones are
#      refused, as they should be), the DNSLink names are given to the edge
#      as static DNSLink records (its Caddyfile `dnslink` lines);
#   4. each group runs twice: cold (blocks and answers fetched through the
#      edge's caches) and warm (the same requests, answered from them).
#
# A failure listed in scripts/conformance-known-failures.txt (a regexp per
# line, matched against the failing check's name) is reported but expected;
# the script exits 1 if any other check fails. Everything is stopped and
# the temporary directory removed on exit.
#
# Environment:
#   TOPCDN_CONFORMANCE_CACHE  suite checkout, binaries, fixtures
#                             (default ~/.cache/topcdn/gateway-conformance-VERSION)
#   TOPCDN_CONFORMANCE_SRC    a gateway-conformance git directory to take the
#                             release from (default: git clone from GitHub)
#   TOPCDN_CONFORMANCE_SPECS  groups to run (default: trustless-gateway
#                             path-gateway subdomain-gateway dnslink-gateway
#                             all); "all" is every stable spec at once (adds
#                             redirects-file and proxy-gateway, whose tests
#                             need the other groups enabled with them)
#   TOPCDN_CONFORMANCE_PORT   first of two loopback ports (default 18480)
#   TOPCDN_CONFORMANCE_OUT    where the logs are kept (default CACHE/reports)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=v0.13.2
CACHE=${TOPCDN_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topcdn/gateway-conformance-$VERSION}
SPECS=${TOPCDN_CONFORMANCE_SPECS:-trustless-gateway path-gateway subdomain-gateway dnslink-gateway all}
PORT=${TOPCDN_CONFORMANCE_PORT:-18480}
EDGE=127.0.0.1:$PORT
ORIGIN=127.0.0.1:$((PORT + 1))
OUT=${TOPCDN_CONFORMANCE_OUT:-$CACHE/reports}
KNOWN=scripts/conformance-known-failures.txt
BIN=bin/topcdn
SRC=$CACHE/src
SUITE=$CACHE/bin/conformance.test
FIXTURES=$CACHE/fixtures

# --- the suite, once -------------------------------------------------------
if [ ! -f "$SRC/go.mod" ]; then
  echo "==> fetching gateway-conformance $VERSION into $SRC"
  rm -rf "$SRC" && mkdir -p "$SRC"
  if [ -n "${TOPCDN_CONFORMANCE_SRC:-}" ]; then
    git --git-dir "$TOPCDN_CONFORMANCE_SRC" archive "$VERSION" | tar -x -C "$SRC"
  else
    tmpclone=$(mktemp -d)
    git clone -q --depth 1 --branch "$VERSION" https://github.com/ipfs/gateway-conformance "$tmpclone"
    git -C "$tmpclone" archive HEAD | tar -x -C "$SRC"
    rm -rf "$tmpclone"
  fi
fi
if [ ! -x "$SUITE" ] || [ ! -x "$CACHE/bin/gateway-conformance" ]; then
  echo "==> building the suite (test binary and CLI)"
  (cd "$SRC" && go test -c -o "$SUITE" ./tests && go build -o "$CACHE/bin/gateway-conformance" ./cmd/gateway-conformance)
fi
if [ ! -f "$FIXTURES/fixtures.car" ]; then
  echo "==> extracting the fixtures (merged)"
  rm -rf "$FIXTURES" && mkdir -p "$FIXTURES"
  "$CACHE/bin/gateway-conformance" extract-fixtures --merged=true --dir="$FIXTURES" >/dev/null
fi

echo "==> building $BIN"
go build -o "$BIN" ./cmd/topcdn

# --- origin and edge ---------------------------------------------------------
for p in "$EDGE" "$ORIGIN"; do
  if (exec 3<>"/dev/tcp/${p%:*}/${p#*:}") 2>/dev/null; then
    echo "$p is in use; set TOPCDN_CONFORMANCE_PORT" >&2; exit 2
  fi
done
DIR=$(mktemp -d "${TMPDIR:-/tmp}/topcdn-conformance.XXXXXX")
PIDS=()
SUITE_RAN=
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && [ -z "$SUITE_RAN" ]; then
    mkdir -p "$OUT" && cp "$DIR"/*.log "$OUT"/ 2>/dev/null || true
    echo "conformance: setup failed (exit $rc); service logs in $OUT" >&2
  fi
  rm -rf "$DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN PID: wait up to 15 s for a service's ready line.
wait_for() {
  for _ in $(seq 150); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "service exited: $(tail -3 "${1%.out}.log")" >&2; return 3; }
    sleep 0.1
  done
  echo "service did not start: $(tail -3 "${1%.out}.log")" >&2; return 3
}

echo "==> origin on http://$ORIGIN, edge on http://$EDGE (state in $DIR)"
"$BIN" origin --data "$DIR/origin" --listen "$ORIGIN" --no-stripe --allow-incomplete --log-level warn \
  >"$DIR/origin.out" 2>"$DIR/origin.log" &
PIDS+=($!)
wait_for "$DIR/origin.out" '^listening on' $!

# DNSLink fixtures: dnslinks.IPFS_NS_MAP is "fqdn:/ipfs/…,fqdn:/ipns/…".
DNSLINKS=""
IFS=',' read -r -a entries < "$FIXTURES/dnslinks.IPFS_NS_MAP" || true # no final newline
for e in "${entries[@]}"; do
  [ -n "$e" ] && DNSLINKS+=$'\t\tdnslink '"${e%%:*} ${e#*:}"$'\n'
done
cat >"$DIR/Caddyfile" <<CADDY
{
	auto_https off
	admin off
	persist_config off
}
http://:$PORT {
	bind 127.0.0.1
	topcdn {
		origin http://$ORIGIN
		domain cdn.test
		memory_cache 64MiB
		key $DIR/edge.key
$DNSLINKS	}
}
CADDY
"$BIN" keygen --out "$DIR/edge.key" >/dev/null
"$BIN" edge --config "$DIR/Caddyfile" >"$DIR/edge.out" 2>"$DIR/edge.log" &
PIDS+=($!)
wait_for "$DIR/edge.out" 'edge running' $!

echo "==> loading the fixtures"
"$BIN" keygen --out "$DIR/publisher.key" >/dev/null
root=$(timeout 60 "$BIN" publish -Q --car "$FIXTURES/fixtures.car" --name conformance \
  --origin "http://$ORIGIN" --key "$DIR/publisher.key")
echo "    fixtures.car published, root $root"
ok=0 refused=0
for f in "$FIXTURES"/*.ipns-record; do
  name=$(basename "$f" .ipns-record); name=${name%%_*}
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
    -H 'Content-Type: application/vnd.ipfs.ipns-record' --data-binary "@$f" "http://$ORIGIN/ipns/$name")
  if [ "$code" = 200 ]; then ok=$((ok + 1)); else refused=$((refused + 1)); fi
done
echo "    IPNS records: $ok stored, $refused refused (the suite's broken and V1-only records)"
echo "    DNSLink names: ${#entries[@]} as static records of the edge"

# --- the suite ----------------------------------------------------------------
mkdir -p "$OUT"
known=$(grep -v '^#' "$KNOWN" | grep -v '^$' | paste -sd '|' -)
known=${known:-^$} # none listed: match nothing
# leaves FILE: "STATUS name" for each leaf check (a test without subtests).
leaves() {
  awk '/^ *--- (PASS|FAIL|SKIP):/ { n = $3; st[n] = $2; p = n; sub(/\/[^\/]*$/, "", p); if (p != n) parent[p] = 1 }
       END { for (k in st) if (!(k in parent)) print substr(st[k], 1, 4), k }' "$1" | sort -k2
}
unexpected=0
printf '\n%-20s %-5s %6s %6s %6s\n' group run passed failed known
for run in cold warm; do
  for spec in $SPECS; do
    log="$OUT/$spec.$run.txt"
    specflag=(-specs "$spec")
    [ "$spec" = all ] && specflag=() # every stable spec, the suite's default
    GATEWAY_URL="http://$EDGE" SUBDOMAIN_GATEWAY_URL="http://cdn.test:$PORT" GATEWAY_CONFORMANCE_HOME="$SRC" \
      timeout 300 "$SUITE" -test.v -test.timeout 5m "${specflag[@]}" >"$log" 2>&1 || true
    leaves "$log" >"$log.leaves"
    pass=$(grep -c '^PASS' "$log.leaves" || true)
    grep '^FAIL' "$log.leaves" | cut -d' ' -f2 >"$log.failed" || true
    fail=$(wc -l <"$log.failed")
    exp=$(grep -cE "$known" "$log.failed" || true)
    printf '%-20s %-5s %6d %6d %6d\n' "$spec" "$run" "$pass" "$fail" "$exp"
    if [ "$pass" -eq 0 ] && [ "$fail" -eq 0 ]; then
      echo "    no results: see $log" >&2; unexpected=1
    fi
    if grep -vE "$known" "$log.failed" >"$log.unexpected"; then
      sed 's/^/    unexpected: /' "$log.unexpected"
      unexpected=1
    fi
  done
done
SUITE_RAN=1
echo
echo "logs: $OUT/GROUP.{cold,warm}.txt (failing checks in *.failed; expected ones in $KNOWN)"
if [ "$unexpected" -ne 0 ]; then
  echo "conformance: unexpected failures" >&2
  exit 1
fi
echo "conformance: only the known failures"
