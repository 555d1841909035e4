#!/usr/bin/env bash
# Holdfast beside LiteLLM's proxy and Portkey's gateway, with the same fake provider, the same
# load generator and the same connection count (benches/load.rs), in one run. Not run by CI.
#
#   benches/peers.sh            # needs python3 (venv), node + npm, and network access to PyPI and npm
#
# Everything is installed into a temporary folder, removed at the end. Environment:
#   LITELLM_VERSION, PORTKEY_VERSION   pin versions (default: the newest)
#   LOAD_SECONDS                       seconds per scenario (default 5)
#   PEERS_WORK                         keep the installs in this folder and reuse them
# Each peer is configured with its own cache in front of the fake provider: LiteLLM with its
# in-memory cache (`cache: true`, type local), Portkey with its simple cache (x-portkey-config).
# Each runs the load bench's hit scenario (recorded prompts, after one pass through the peer)
# and its no-store scenario (fresh prompts, `cache-control: no-store`: a passthrough).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# PEERS_WORK=DIR keeps the installs in DIR (reused when present) instead of a temporary folder.
work=${PEERS_WORK:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -z "${PEERS_WORK:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# LiteLLM's proxy imports for a long time before it listens (over a minute on a busy machine).
wait_port() {
    for _ in $(seq 1 900); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "nothing listens on port $1 after 180 s; its log:" >&2
    tail -n 30 "$2" >&2
    return 1
}

upstream=$(free_port)
litellm_port=$(free_port)
portkey_port=$(free_port)

echo "== installing LiteLLM proxy (PyPI) and Portkey gateway (npm) into $work"
if [ ! -x "$work/venv/bin/litellm" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q "litellm[proxy]${LITELLM_VERSION:+==$LITELLM_VERSION}"
fi
if [ ! -d "$work/node_modules/@portkey-ai/gateway" ]; then
    (cd "$work" && npm install --silent --no-audit --no-fund "@portkey-ai/gateway${PORTKEY_VERSION:+@$PORTKEY_VERSION}" >/dev/null)
fi
litellm_version=$("$work/venv/bin/pip" show litellm | awk '/^Version:/ {print $2}')
portkey_version=$(node -p "require('$work/node_modules/@portkey-ai/gateway/package.json').version")

cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-load
    litellm_params:
      model: openai/gpt-load
      api_base: http://127.0.0.1:$upstream/v1
      api_key: sk-fake
litellm_settings:
  cache: true
  cache_params:
    type: local
EOF

# The fake provider starts inside the bench; the peers only connect to it on first request.
# Recent LiteLLM refuses to start without a master key; requests then present it.
LITELLM_MASTER_KEY=sk-holdfast-bench "$work/venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" \
    >"$work/litellm.log" 2>&1 &
pids+=($!)
# Started as node itself (not through npx), so the pid kept for cleanup is the server's.
(cd "$work" && exec node "$work/node_modules/.bin/gateway" --port="$portkey_port" >"$work/portkey.log" 2>&1) &
pids+=($!)
wait_port "$litellm_port" "$work/litellm.log"
wait_port "$portkey_port" "$work/portkey.log"

portkey_config='{"cache":{"mode":"simple"}}'
peers="litellm $litellm_version=127.0.0.1:$litellm_port|authorization:Bearer sk-holdfast-bench"
peers+=";portkey $portkey_version=127.0.0.1:$portkey_port|x-portkey-provider:openai"
peers+="|x-portkey-custom-host:http://127.0.0.1:$upstream/v1|authorization:Bearer sk-fake"
peers+="|x-portkey-config:$portkey_config"

echo "== LiteLLM $litellm_version, Portkey gateway $portkey_version, Holdfast $(git -C "$root" rev-parse --short HEAD)"
cd "$root"
LOAD_UPSTREAM_PORT=$upstream LOAD_PEERS="$peers" LOAD_ONLY=hit,nostore LOAD_SIZES=1024 \
    cargo bench --bench load
