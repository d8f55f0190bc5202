#!/bin/sh
# Before the files are unpacked: the system user the units run as, so that
# /etc/switchboard can belong to its group. /usr/lib/sysusers.d/switchboard.conf
# describes the same user for systemd-sysusers.
set -e
if ! getent group switchboard >/dev/null; then
	groupadd --system switchboard
fi
if ! getent passwd switchboard >/dev/null; then
	useradd --system --gid switchboard --home-dir /var/lib/switchboard --no-create-home \
		--shell /usr/sbin/nologin --comment "Switchboard relay" switchboard
fi
