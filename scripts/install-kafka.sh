#!/usr/bin/env bash
# Fetches the Kafka broker jars (KRaft mode) from Maven Central into .cache/kafka/libs
# (git-ignored). The fixtures start the broker with `java -cp '.cache/kafka/libs/*'`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/kafka/libs"
stamp="$dest/.complete-$(sha256sum "$root/scripts/kafka/pom.xml" | cut -c1-16)"
if [[ -f "$stamp" ]]; then
  echo "kafka jars ready in $dest"; exit 0
fi
rm -rf "$dest"; mkdir -p "$dest"
mvn -q -B -f "$root/scripts/kafka/pom.xml" \
  -Dmaven.repo.local="$root/.cache/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest"
touch "$stamp"
echo "kafka jars ready in $dest ($(ls "$dest" | wc -l) jars)"
