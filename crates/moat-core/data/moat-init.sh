#!/bin/sh
# moat-init: the entry point of images moat builds. As root it adds moat's
# CA (mounted by the daemon) to the system trust store and points the
# language-specific stores at the result, then runs the command as the user
# named by MOAT_USER ("uid:gid" or a user name), creating that user when the
# image has none of that id, after writing the files of MOAT_HOME_FILES
# (one per line: "<octal mode> <path in the home> <base64 contents>") into
# that user's home, owned by the user (with MOAT_HOME_FILES_KEEP=1, a file
# that exists already is left as it is: `moat join` starts a second agent
# next to the first, whose files are its own). Without MOAT_USER the command
# runs as root; when not root, it only runs the command.
set -eu

# Writes MOAT_HOME_FILES into $1 (a home), owned by $2 (uid:gid).
stage_home_files() {
    [ -n "$files" ] || return 0
    printf '%s\n' "$files" | while read -r mode path data; do
        [ -n "$path" ] || continue
        case "/$path/" in
            */../*|*/./*|//*) echo "moat-init: refusing home file $path" >&2; exit 126 ;;
        esac
        if [ "$keep" = 1 ] && [ -e "$1/$path" ]; then
            continue
        fi
        mkdir -p "$1/$(dirname "$path")"
        printf '%s' "$data" | base64 -d > "$1/$path"
        chmod "$mode" "$1/$path"
        chown -R "$2" "$1/${path%%/*}"
    done
}

moat_ca=/etc/moat/ca/ca.crt
bundle=/etc/ssl/certs/ca-certificates.crt

# The store is updated once per container: a later init (`moat join`) waits
# for the first one (the lock) and then finds the marker.
store=/usr/local/share/ca-certificates
trusted="$store/.moat-trusted"

# Adds moat's CA to the system trust store unless an earlier init did.
trust_moat_ca() {
    [ -f "$trusted" ] && return 0
    cp "$moat_ca" "$store/moat-proxy.crt"
    update-ca-certificates >/dev/null 2>&1 && [ -f "$bundle" ] && : > "$trusted"
}

if [ "$(id -u)" = 0 ] && [ -f "$moat_ca" ]; then
    mkdir -p "$store"
    exec 9>"$store/.moat-lock"
    flock -w 120 9 || true
    if trust_moat_ca; then
        export SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" CURL_CA_BUNDLE="$bundle" \
            PIP_CERT="$bundle" NPM_CONFIG_CAFILE="$bundle" NODE_EXTRA_CA_CERTS="$moat_ca"
    else
        echo "moat-init: could not add moat's CA to the system trust store; using $moat_ca alone" >&2
    fi
    exec 9>&-
fi

target="${MOAT_USER:-}"
files="${MOAT_HOME_FILES:-}"
keep="${MOAT_HOME_FILES_KEEP:-}"
unset MOAT_USER MOAT_HOME_FILES MOAT_HOME_FILES_KEEP
if [ "$(id -u)" != 0 ]; then
    exec "$@"
fi
if [ -z "$target" ]; then
    stage_home_files "${HOME:-/root}" 0:0
    exec "$@"
fi

case "$target" in
    *:*) uid="${target%%:*}"; gid="${target#*:}" ;;
    *)
        uid="$(id -u "$target")" || { echo "moat-init: no user $target in this image" >&2; exit 126; }
        gid="$(id -g "$target")"
        ;;
esac
if [ "$uid" = 0 ]; then
    stage_home_files "$(getent passwd 0 | cut -d: -f6)" 0:0
    exec "$@"
fi

getent group "$gid" >/dev/null || groupadd --gid "$gid" moat
if ! getent passwd "$uid" >/dev/null; then
    useradd --uid "$uid" --gid "$gid" --no-create-home --home-dir /home/moat --shell /bin/sh moat
fi
home="$(getent passwd "$uid" | cut -d: -f6)"
mkdir -p "$home"
chown "$uid:$gid" "$home"
stage_home_files "$home" "$uid:$gid"
export HOME="$home" USER="$(getent passwd "$uid" | cut -d: -f1)"
exec setpriv --reuid "$uid" --regid "$gid" --clear-groups -- "$@"
