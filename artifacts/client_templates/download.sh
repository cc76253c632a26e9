#!/usr/bin/env bash
# Gatehouse download client for __RELEASE__ / __VARIANT__ (links valid until __EXPIRES_AT__).
# Needs bash, curl and sha256sum. Downloads in parallel, resumes partial files, retries, and
# moves a file to its final name only after its sha256 matches.
#   bash download.sh [DEST_DIR]        (default: ./__RELEASE__-__VARIANT__)
#   GATEHOUSE_PARALLEL=8 bash download.sh
# If links have expired, download a fresh copy of this script from the portal (My access).
set -uo pipefail
dest=${1:-./__RELEASE__-__VARIANT__}
parallel=${GATEHOUSE_PARALLEL:-4}
mkdir -p "$dest" || exit 1
status_dir=$(mktemp -d)
trap 'rm -rf "$status_dir"' EXIT

fetch_one() {  # url path size sha256
  local url=$1 path=$2 size=$3 sha=$4 target="$dest/$2" part="$dest/$2.part" code
  if [ -f "$target" ] && [ "$(sha256sum < "$target" | cut -d' ' -f1)" = "$sha" ]; then
    echo "ok       $path (already verified)"; return 0
  fi
  mkdir -p "$(dirname "$target")"
  if [ -f "$part" ] && [ "$(stat -c %s "$part")" -gt "$size" ]; then rm -f "$part"; fi
  if [ ! -f "$part" ] || [ "$(stat -c %s "$part")" -lt "$size" ]; then
    code=$(curl --silent --show-error --location --fail --retry 5 --retry-delay 2 --retry-all-errors \
                --continue-at - --output "$part" --write-out '%{http_code}' "$url")
    if [ $? -ne 0 ]; then
      case "$code" in
        410) echo "expired  $path: the link has expired; download a fresh download.sh from the portal" >&2 ;;
        403) echo "refused  $path: access refused (revoked, expired or invalid link); see My access" >&2 ;;
        429) echo "limited  $path: download limit reached; try again later (resuming is always allowed)" >&2 ;;
        *)   echo "failed   $path: HTTP $code" >&2 ;;
      esac
      touch "$status_dir/failed.$RANDOM$RANDOM"; return 1
    fi
  fi
  if [ "$(sha256sum < "$part" | cut -d' ' -f1)" != "$sha" ]; then
    echo "corrupt  $path: sha256 mismatch, partial file removed; run the script again" >&2
    rm -f "$part"; touch "$status_dir/failed.$RANDOM$RANDOM"; return 1
  fi
  mv -f "$part" "$target" && echo "ok       $path"
}

while IFS=$'\t' read -r url path size sha; do
  [ -n "$url" ] || continue
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  fetch_one "$url" "$path" "$size" "$sha" &
done <<'GATEHOUSE_MANIFEST'
__MANIFEST_TSV__
GATEHOUSE_MANIFEST
wait

failures=$(find "$status_dir" -name 'failed.*' | wc -l)
if [ "$failures" -gt 0 ]; then
  echo "$failures file(s) not downloaded; run the script again to resume." >&2
  exit 1
fi
echo "All files of __RELEASE__/__VARIANT__ downloaded and verified in $dest"
