#!/usr/bin/env bash
# demo.sh: build topcdn, run a local origin on loopback, publish the example
# site to it and print what to open. Ctrl-C stops the origin.
#
# State lives in ./demo (blocks, database, keys); running again keeps it and
# republishes (the name's sequence goes up, unchanged blocks are not resent).
set -euo pipefail
cd "$(dirname "$0")/.."

ADDR=${TOPCDN_DEMO_ADDR:-127.0.0.1:8081}
DIR=${TOPCDN_DEMO_DIR:-demo}
BIN=bin/topcdn

mkdir -p "$DIR"
echo "==> building $BIN"
go build -o "$BIN" ./cmd/topcdn

if [ ! -f "$DIR/publisher.key" ]; then
  echo "==> creating publisher key $DIR/publisher.key"
  "$BIN" keygen --out "$DIR/publisher.key" >/dev/null
fi

echo "==> starting origin on http://$ADDR (data in $DIR/origin, log in $DIR/origin.log)"
"$BIN" origin --data "$DIR/origin" --listen "$ADDR" --deserialized >"$DIR/origin.out" 2>"$DIR/origin.log" &
ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null; wait $ORIGIN 2>/dev/null; echo; echo "origin stopped"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on' "$DIR/origin.out" 2>/dev/null && break
  kill -0 $ORIGIN 2>/dev/null || { cat "$DIR/origin.log"; exit 1; }
  sleep 0.1
done

echo "==> publishing examples/site as 'blog'"
"$BIN" publish examples/site --name blog --origin "http://$ADDR" --key "$DIR/publisher.key" | tee "$DIR/publish.out"
CID=$(awk '/^root/ {print $2}' "$DIR/publish.out")
IPNS=$(awk '/^ipns/ {print $2}' "$DIR/publish.out")

cat <<MSG

The origin is serving the example site. Open or fetch:

  http://$ADDR/ipns/blog/                 the site, by its human name (in a browser)
  http://$ADDR/ipfs/$CID/
                                          the same version, by its root CID
  http://$ADDR/api/v1/names               every published name (JSON)
  http://$ADDR/metrics                    Prometheus metrics

Trustless Gateway (what edges will fetch), verifiable with any IPFS tool:

  curl -H 'Accept: application/vnd.ipld.raw' http://$ADDR/ipfs/$CID -o root.block
  curl 'http://$ADDR/ipfs/$CID?format=car' -o site.car
  curl -H 'Accept: application/vnd.ipfs.ipns-record' http://$ADDR/ipns/$IPNS -o blog.ipns-record

Edit examples/site and run 'make demo' again to publish a new version.
Press Ctrl-C to stop the origin.
MSG
wait $ORIGIN
