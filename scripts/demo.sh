#!/usr/bin/env bash
# demo.sh: build topcdn, run a local origin, 14 storage peers and an edge
# (Caddy with the topcdn module, from ./Caddyfile) on loopback, publish the
# example site, wait until it is striped across the peers, and print what
# to open. Ctrl-C stops everything.
#
# State lives in ./demo (blocks, database, keys); running again keeps it and
# republishes (the name's sequence goes up, unchanged blocks are not resent).
set -euo pipefail
cd "$(dirname "$0")/.."

ADDR=${TOPCDN_DEMO_ADDR:-127.0.0.1:8081}
PEERS=${TOPCDN_DEMO_PEERS:-14}
DIR=${TOPCDN_DEMO_DIR:-demo}
BIN=bin/topcdn

mkdir -p "$DIR"
echo "==> building $BIN"
go build -o "$BIN" ./cmd/topcdn

if [ ! -f "$DIR/publisher.key" ]; then
  echo "==> creating publisher key $DIR/publisher.key"
  "$BIN" keygen --out "$DIR/publisher.key" >/dev/null
fi

PIDS=()
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  echo; echo "origin and storage peers stopped"
}
trap cleanup EXIT

# wait_listening FILE PID: wait for a service's "listening on" line.
wait_listening() {
  for _ in $(seq 150); do
    grep -q '^listening on' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "service exited; see ${1%.out}.log" >&2; return 1; }
    sleep 0.1
  done
  echo "service did not start; see ${1%.out}.log" >&2; return 1
}

echo "==> starting origin on http://$ADDR (data in $DIR/origin, log in $DIR/origin.log)"
"$BIN" origin --data "$DIR/origin" --listen "$ADDR" --deserialized \
  --heartbeat-interval 2s --audit-interval 2s --repair-interval 5s >"$DIR/origin.out" 2>"$DIR/origin.log" &
PIDS+=($!)
wait_listening "$DIR/origin.out" $!

echo "==> starting $PEERS storage peers on 127.0.0.1:9001-$((9000 + PEERS)) (data and logs in $DIR/peers)"
mkdir -p "$DIR/peers"
for i in $(seq "$PEERS"); do
  P="$DIR/peers/$i"
  "$BIN" storage --data "$P" --listen "127.0.0.1:$((9000 + i))" --origin "http://$ADDR" \
    --capacity 1GiB --heartbeat 2s >"$P.out" 2>"$P.log" &
  PIDS+=($!)
done
for i in $(seq "$PEERS"); do
  wait_listening "$DIR/peers/$i.out" "${PIDS[$i]}"
done

echo "==> starting the edge (Caddy + topcdn) on http://127.0.0.1:8080 from ./Caddyfile (log in $DIR/edge.log)"
"$BIN" edge --config Caddyfile >"$DIR/edge.out" 2>"$DIR/edge.log" &
PIDS+=($!)
for _ in $(seq 150); do
  grep -q 'edge running' "$DIR/edge.out" 2>/dev/null && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "edge exited; see $DIR/edge.log" >&2; exit 1; }
  sleep 0.1
done

echo "==> publishing examples/site as 'blog'"
"$BIN" publish examples/site --name blog --origin "http://$ADDR" --key "$DIR/publisher.key" | tee "$DIR/publish.out"
CID=$(awk '/^root/ {print $2}' "$DIR/publish.out")
IPNS=$(awk '/^ipns/ {print $2}' "$DIR/publish.out")

echo "==> waiting for the site to be striped across the storage peers"
for _ in $(seq 60); do
  curl -fs "http://$ADDR/api/v1/manifests/$CID" >/dev/null 2>&1 && break
  sleep 0.5
done
"$BIN" storage status --origin "http://$ADDR" || true

cat <<MSG

The edge serves the example site from the storage peers, verified:

  curl -H 'Host: blog.cdn.test' http://127.0.0.1:8080/
  http://blog.cdn.test:8080/              in a browser, once /etc/hosts has
                                          '127.0.0.1 blog.cdn.test' (DNS routing comes later)
  http://127.0.0.1:8080/ipfs/$CID/
                                          the same version by CID (path gateway)

The origin, for inspection:

  http://$ADDR/ipns/blog/                 the site through the origin's own gateway
  http://$ADDR/ipfs/$CID/
                                          the same version, by its root CID
  http://$ADDR/api/v1/names               every published name (JSON)
  http://$ADDR/metrics                    Prometheus metrics
  http://$ADDR/api/v1/manifests/$CID
                                          where every block lives: segments, shards, peers

Trustless Gateway (what edges will fetch), verifiable with any IPFS tool:

  curl -H 'Accept: application/vnd.ipld.raw' http://$ADDR/ipfs/$CID -o root.block
  curl 'http://$ADDR/ipfs/$CID?format=car' -o site.car
  curl -H 'Accept: application/vnd.ipfs.ipns-record' http://$ADDR/ipns/$IPNS -o blog.ipns-record

The site now lives on the storage peers, not on the origin: kill a few
(up to 4 of the 14: 'kill PID', PIDs in $DIR/pids) and it still loads;
'bin/topcdn storage status' shows what the origin sees.

Edit examples/site and run 'make demo' again to publish a new version.
Press Ctrl-C to stop everything.
MSG
printf '%s\n' "${PIDS[@]}" > "$DIR/pids"
wait "${PIDS[0]}"
