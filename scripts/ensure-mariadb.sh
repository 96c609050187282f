#!/usr/bin/env bash
# ensure-mariadb.sh makes sure a MariaDB server answers on 127.0.0.1:3306 for
# root with an empty password over TCP, as `make test` and `make demo`
# expect, and that the database `test` exists. On a fresh Debian or Ubuntu
# machine it installs mariadb-server with apt-get, starts it without systemd,
# and lets root log in over TCP. It also installs kcat (the end-to-end test's
# third-party consumer) when it is missing; that step may fail without
# failing the script. Run it as root, or with sudo available.
set -euo pipefail

readonly HOST=127.0.0.1 PORT=3306 MARIADBD=/usr/sbin/mariadbd

log() { echo "ensure-mariadb: $*" >&2; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		log "need root to run: $*"
		return 1
	fi
}

apt_updated=no
apt_install() {
	if [ "$apt_updated" = no ]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=yes
	fi
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# tcp_ok: root logs in over TCP with an empty password.
tcp_ok() {
	command -v mariadb >/dev/null 2>&1 &&
		mariadb --protocol=TCP -h"$HOST" -P"$PORT" -uroot --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1
}

# server_up: the server answers at all, whatever the credentials.
server_up() {
	mariadb-admin --protocol=TCP -h"$HOST" -P"$PORT" --connect-timeout=2 ping >/dev/null 2>&1 ||
		as_root mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1
}

ensure_server() {
	if tcp_ok; then
		return 0
	fi
	if [ ! -x "$MARIADBD" ]; then
		log "installing mariadb-server with apt-get"
		apt_install mariadb-server
	fi
	if ! command -v mariadb >/dev/null 2>&1; then
		apt_install mariadb-client
	fi
	if ! server_up; then
		log "starting $MARIADBD"
		as_root mkdir -p /run/mysqld
		as_root chown mysql:mysql /run/mysqld
		if [ ! -d /var/lib/mysql/mysql ]; then
			as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
		fi
		as_root start-stop-daemon --start --oknodo --background --exec "$MARIADBD" -- --user=mysql
		for _ in $(seq 1 60); do
			server_up && break
			sleep 0.5
		done
		server_up || { log "MariaDB did not start within 30s"; return 1; }
	fi
	if ! tcp_ok; then
		# Debian's root@localhost authenticates by unix_socket only: allow an
		# empty password too, over the socket as the system's root user.
		log "letting root log in over TCP with an empty password"
		as_root mariadb -uroot <<'SQL'
ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
	fi
	tcp_ok || { log "root still cannot log in over TCP at $HOST:$PORT"; return 1; }
}

ensure_server
mariadb --protocol=TCP -h"$HOST" -P"$PORT" -uroot -e 'CREATE DATABASE IF NOT EXISTS test'
# Parallel test packages, each test with its own pools, plus the chaos soak's
# processes pass the default 151 connections on a loaded machine.
mariadb --protocol=TCP -h"$HOST" -P"$PORT" -uroot -e 'SET GLOBAL max_connections = GREATEST(@@max_connections, 1000)'
log "MariaDB is up on $HOST:$PORT (root, empty password)"

if ! command -v kcat >/dev/null 2>&1; then
	log "installing kcat with apt-get (optional)"
	apt_install kcat || log "could not install kcat; the kcat test will be skipped"
fi
