#!/usr/bin/env bash
# A pilot certificate authority and a server certificate for the broker's TLS listener.
#
#   scripts/pilot-ca.sh DIR HOSTNAME [HOSTNAME or IP ...]
#
# Writes DIR/ca.crt (install it on the devices), DIR/ca.key (keep it offline), DIR/server.crt and
# DIR/server.key (the broker's). An existing CA in DIR is reused, so a new server certificate
# (another host name, or a renewal) does not mean touching every device. For a certificate from
# a public or the city's own CA instead, see docs/deploy.md.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR HOSTNAME [HOSTNAME or IP ...]" >&2
    exit 2
fi
dir=$1
shift
command -v openssl >/dev/null || { echo "$0: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir"
umask 077

san=""
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
        san+="${san:+,}IP:$name"
    else
        san+="${san:+,}DNS:$name"
    fi
done

if [[ ! -s $dir/ca.key || ! -s $dir/ca.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days 3650 \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/O=Pantau/CN=Pantau pilot CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

openssl req -new -newkey rsa:2048 -sha256 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/O=Pantau/CN=$1" 2>/dev/null
extensions=$(mktemp)
trap 'rm -f "$extensions" "$dir/server.csr"' EXIT
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$extensions"
# 825 days: the longest validity that every TLS client still accepts.
openssl x509 -req -sha256 -days 825 -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -extfile "$extensions" -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/ca.srl"
chmod 0644 "$dir/ca.crt" "$dir/server.crt"
echo "pilot CA: $dir/ca.crt; server certificate for $*: $dir/server.crt"
