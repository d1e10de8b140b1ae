#!/usr/bin/env bash
# Installs whatever Plantbus needs that this machine lacks, then returns quickly on later runs.
#   scripts/setup.sh            runtime: system packages + .venv with plantbus
#   scripts/setup.sh test       + test extras and the Node.js packages of the interop tests
#   scripts/setup.sh bench      + what the benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-run}"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv python3-pip)
if [ "$what" != run ]; then
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
  # Real database servers for the historian and relational-model tests (started by the tests, never as services).
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
  command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || need_apt+=(victoria-metrics)
  # Headless browser for the operator-console tests (tests/test_console_browser.py).
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  # Edge CV tests: tesseract with Russian data (printed date/batch OCR), a font to render test prints.
  command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
  ls /usr/share/tesseract-ocr/*/tessdata/rus.traineddata >/dev/null 2>&1 || need_apt+=(tesseract-ocr-rus)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
  # Real photos (person.jpg, dog.jpg, horses.jpg) for the person-detector tests.
  [ -f /usr/share/darknet/data/person.jpg ] || need_apt+=(darknet)
  # Virtual serial pairs (pseudo-terminals) for the Modbus RTU tests (tests/test_modbus_rtu.py).
  command -v socat >/dev/null 2>&1 || need_apt+=(socat)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi

extras=""
case "$what" in
  test) extras="[test,train]" ;;  # train: the CPU torch wheel, so `plantbus cv train` is tested
  bench) extras="[test]" ;;
esac
stamp=".venv/.plantbus-${what}-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages (${what})"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
  rm -f .venv/.plantbus-"${what}"-*
  touch "$stamp"
fi

if [ "$what" != run ] && [ -f tests/interop/package.json ]; then
  lock=tests/interop/package-lock.json
  nstamp="tests/interop/node_modules/.plantbus-$(cat "$lock" | sha1sum | cut -c1-12)"
  if [ ! -f "$nstamp" ]; then
    echo "setup: installing Node.js packages for the interop tests"
    (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
    touch "$nstamp"
  fi
fi
