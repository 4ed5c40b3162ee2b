#!/usr/bin/env bash
# Local stand-ins for the three base images of the stack, built from Debian packages where no
# image registry can be reached: a debootstrap of Debian bookworm (minbase) with the packages of
# deploy/standins/NAME/packages, imported into the engine, then deploy/standins/NAME/Dockerfile
# on top (environment, entrypoint, command as the official image has them).
#
#   python    for the Dockerfile's PYTHON_IMAGE (python:3.11-slim-bookworm)
#   postgres  for the compose file's POSTGRES_IMAGE (postgres:15-alpine)
#   nginx     for the compose file's NGINX_IMAGE (nginx:1.27-alpine)
#
# Each is tagged dotrec-standin/NAME:HASH, HASH a digest of the suite, the files of its folder
# and the code of build() below (as bash prints it: comments left out): a second run finds the
# tag and builds nothing; a change to any of those builds that image anew, and the older tags of
# it are removed. The .deb files are kept in the debootstrap cache below, so a rebuild downloads
# nothing it has already. Prints one line per image for a .env file or `export`:
#   PYTHON_IMAGE=dotrec-standin/python:0123abcd...
# Needs root (debootstrap, chroot), debootstrap and a running Docker engine. Usage:
#   deploy/standin-images.sh [python] [postgres] [nginx]      (none named: all three)
# Settings (environment): DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (default: the first Debian
# mirror of this host's apt sources, else deb.debian.org), XDG_CACHE_HOME (~/.cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=${DEBIAN_SUITE:-bookworm}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dotrec/debootstrap
docker=${DOCKER:-docker}

log() { echo "standin-images: $*" >&2; }
die() { log "$*"; exit 1; }

default_mirror() {
    # The host's own Debian mirror: the one apt-get here is known to reach.
    local found
    found=$(grep -hoE '(URIs:|^deb)\s+\S+/debian/?(\s|$)' /etc/apt/sources.list /etc/apt/sources.list.d/* \
        2>/dev/null | grep -oE '\S+/debian/?$' | head -n1 || true)
    echo "${found:-http://deb.debian.org/debian}"
}
mirror=${DEBIAN_MIRROR:-$(default_mirror)}

content_hash() {
    local name=$1
    {
        echo "suite=$suite"
        declare -f build
        for file in "$here/standins/$name"/*; do
            echo "--- ${file##*/}"
            cat "$file"
        done
    } | sha256sum | cut -c1-16
}

variable_of() {
    case $1 in
        python) echo PYTHON_IMAGE ;;
        postgres) echo POSTGRES_IMAGE ;;
        nginx) echo NGINX_IMAGE ;;
        *) die "no stand-in named $1 (python, postgres, nginx)" ;;
    esac
}

rootfs=""
cleanup() {
    if [ -n "$rootfs" ] && [ -d "$rootfs" ]; then
        # The second stage mounts /proc and /sys in the target; never delete through a mount.
        umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
        rm -rf --one-file-system "$rootfs"
    fi
}
trap cleanup EXIT

build() {
    local name=$1 tag=$2 packages
    packages=$(grep -vE '^\s*(#|$)' "$here/standins/$name/packages" | paste -sd, -)
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/dotrec-standin-$name.XXXXXX")
    mkdir -p "$cache"
    log "$name: debootstrap $suite ($packages) from $mirror"
    # Two stages, so that nothing is started while the packages are configured: the second
    # stage runs inside the new root, where policy-rc.d forbids starting services (a server
    # started there would share this host's network) and postgresql-common creates no cluster.
    debootstrap --foreign --variant=minbase --include="$packages" --cache-dir="$cache" \
        "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || die "$name: debootstrap failed (log: $rootfs.log)"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    mkdir -p "$rootfs/etc/postgresql-common/createcluster.d"
    echo "create_main_cluster = false" >"$rootfs/etc/postgresql-common/createcluster.d/standin.conf"
    chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$rootfs.log" 2>&1 \
        || die "$name: debootstrap --second-stage failed (log: $rootfs.log)"
    # What an image does not need: package caches and lists, documentation, the host's names.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
    find "$rootfs/var/log" -type f -delete
    log "$name: importing the root file system"
    tar --numeric-owner -C "$rootfs" -c . \
        | "$docker" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - "dotrec-standin/$name-rootfs:${tag##*:}" >/dev/null
    cleanup
    rm -f "$rootfs.log"
    rootfs=""
    log "$name: building $tag"
    "$docker" build --quiet --build-arg "BASE=dotrec-standin/$name-rootfs:${tag##*:}" \
        --label "org.dotrec.standin=$name" -t "$tag" "$here/standins/$name" >/dev/null
}

command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
"$docker" info >/dev/null 2>&1 || die "no Docker engine answers ($docker info failed)"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(python postgres nginx)
for name in "${names[@]}"; do
    variable=$(variable_of "$name")
    tag="dotrec-standin/$name:$(content_hash "$name")"
    if "$docker" image inspect "$tag" >/dev/null 2>&1; then
        log "$name: $tag is there already"
    else
        [ "$(id -u)" = 0 ] || die "$name: building a stand-in needs root (debootstrap, chroot)"
        build "$name" "$tag"
        # Older builds of this stand-in, unless a container still uses them.
        "$docker" image ls --format '{{.Repository}}:{{.Tag}}' \
            --filter "reference=dotrec-standin/$name" --filter "reference=dotrec-standin/$name-rootfs" \
            | grep -vx -e "$tag" -e "dotrec-standin/$name-rootfs:${tag##*:}" \
            | xargs -r "$docker" rmi >/dev/null 2>&1 || true
    fi
    echo "$variable=$tag"
done
