# Sourced by run-tests.sh and bench.sh: where the Kotlin compiler and JNA are, or a loud failure
# naming what is missing (.ci/run installs both). Sets kotlin_home and jna.
kotlin_home="${KOTLIN_HOME:-${GRIDWORK_TOOLS:-$HOME/.cache/gridwork-tools}/kotlin/node_modules/kotlin-compiler}"
jna="${JNA_JAR:-/usr/share/java/jna.jar}"
for f in "$kotlin_home/bin/kotlinc-jvm" "$jna"; do
    [ -e "$f" ] || { echo "$(basename "$0"): $f missing (.ci/run installs kotlin-compiler from npm and libjna-java)" >&2; exit 1; }
done
