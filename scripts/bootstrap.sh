#!/usr/bin/env bash
# Install what Caxton needs on a Debian machine that has only the Rust
# toolchain. Does nothing when everything is already present.
#
#   scripts/bootstrap.sh          build and run: the C libraries hwlocality links
#                                 against (found through pkg-config), and a font
#                                 for the labels of `engine hdr plot --output x.png`.
#   scripts/bootstrap.sh --test   also the tools the tests check the engine's
#                                 output with: promtool (Debian's prometheus) for
#                                 the metrics and the alert rules, systemd-analyze
#                                 for the service unit, and HdrHistogram's own
#                                 HistogramLogProcessor (Java) for the HDR logs;
#                                 and the wasm32-unknown-unknown Rust target the
#                                 agent SDK's examples are built for.
set -euo pipefail

# Rust agents (sdk/rust, examples/rust) build for wasm32-unknown-unknown. The
# target comes from the toolchain server, not a package registry: when it
# cannot be added the SDK's tests fail saying so, and the rest still run.
wasm_target=wasm32-unknown-unknown
if [ "${1:-}" = "--test" ] && command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed 2>/dev/null | grep -qx "$wasm_target"; then
  echo "bootstrap: adding the Rust target $wasm_target" >&2
  rustup target add "$wasm_target" >&2 \
    || echo "bootstrap: could not add $wasm_target; the Rust SDK tests will say so" >&2
fi

packages=(pkg-config libhwloc-dev libudev-dev fonts-dejavu-core)
if [ "${1:-}" = "--test" ]; then
  packages+=(prometheus systemd default-jre-headless libhdrhistogram-java)
fi
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
((${#missing[@]})) || exit 0

echo "bootstrap: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# Only promtool is wanted from the prometheus package: keep its server from
# starting, now or at boot (tests need no Prometheus, and a test machine should
# not grow a listener on 9090).
policy=/usr/sbin/policy-rc.d
made_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
  "${sudo_cmd[@]}" chmod +x "$policy"
  made_policy=true
fi
trap '[ "$made_policy" = true ] && "${sudo_cmd[@]}" rm -f "$policy"' EXIT
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  if command -v systemctl >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable prometheus >/dev/null 2>&1 || true
  fi
  "${sudo_cmd[@]}" rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
fi
