# Sourced by the binding suites' run-tests.sh: starts a real gridwork-sync-server on loopback with
# the fixture district (bindings/tests/fixtures/district.json), a worker w1 on grid g0 and a
# supervisor s1 of Community 0, and exports one-time enrolment codes for three phones:
# GRIDWORK_WORKER_CODE, GRIDWORK_SUPERVISOR_A_CODE, GRIDWORK_SUPERVISOR_B_CODE, and two more for
# the worker (GRIDWORK_ORIGINAL_CODE, GRIDWORK_RESTORED_CODE) and one for a phone to be lost and
# wiped (GRIDWORK_LOST_CODE). GRIDWORK_SERVER_BIN and GRIDWORK_SERVER_DATA let a suite run the
# server's admin commands (a wipe order) while it serves.
# Needs: $root (the repository), $target (cargo's target dir), $work (a scratch dir the caller
# removes). Sets $server_pid; the caller's EXIT trap should kill it.
start_district_server() {
    local srv="$target/debug/gridwork-sync-server" data="$work/server" port url
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    url="http://127.0.0.1:$port"
    "$srv" --data-dir "$data" admin import-catalog "$root/bindings/tests/fixtures/district.json" >/dev/null
    "$srv" --data-dir "$data" admin set-user w1 --role worker --scope grid:g0 >/dev/null
    "$srv" --data-dir "$data" admin set-user s1 --role supervisor --scope "community:Community 0" >/dev/null
    code() { "$srv" --data-dir "$data" admin enrol-device "$1" --server "$url" | tail -1; }
    GRIDWORK_WORKER_CODE="$(code w1)"
    GRIDWORK_SUPERVISOR_A_CODE="$(code s1)"
    GRIDWORK_SUPERVISOR_B_CODE="$(code s1)"
    # The same worker on a phone whose store was restored onto another phone, which enrols anew.
    GRIDWORK_ORIGINAL_CODE="$(code w1)"
    GRIDWORK_RESTORED_CODE="$(code w1)"
    GRIDWORK_LOST_CODE="$(code w1)"
    GRIDWORK_SERVER_BIN="$srv"
    GRIDWORK_SERVER_DATA="$data"
    export GRIDWORK_WORKER_CODE GRIDWORK_SUPERVISOR_A_CODE GRIDWORK_SUPERVISOR_B_CODE \
        GRIDWORK_ORIGINAL_CODE GRIDWORK_RESTORED_CODE GRIDWORK_LOST_CODE GRIDWORK_SERVER_BIN GRIDWORK_SERVER_DATA
    "$srv" --data-dir "$data" serve --listen "127.0.0.1:$port" 2>"$work/server.log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "$url/v1/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "district-server: the server did not answer on $url; its log:" >&2
    cat "$work/server.log" >&2
    return 1
}
