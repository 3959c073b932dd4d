#!/bin/sh
# The quickpay container's start in docker-compose.yml. DEV ONLY.
#
# Vault (its file storage in the vaultdata volume) was unsealed by the
# vault-unseal service, which left its ROOT TOKEN in the vault-unseal volume,
# mounted here read-only. Using a root token is for a developer's machine
# only: a real deployment gives quickpay an AppRole (VAULT_ROLE_ID,
# VAULT_SECRET_ID).
#
# The SoftHSM2 token lives in the softhsm volume. provision-softhsm makes it at
# the first start (its PINs generated and stored in Vault) and at every later
# start only logs in with Vault's PIN and checks the keys: the token, Vault and
# Postgres are kept together, so rows encrypted before a `down`/`up` decrypt
# after it. Remove all three together (`docker compose down -v`), never one.
set -eu

state=${QUICKPAY_VAULT_UNSEAL_DIR:-/var/lib/vault-unseal}
hsm=${QUICKPAY_SOFTHSM_DIR:-/var/lib/quickpay/softhsm}

if [ ! -s "$state/root-token" ]; then
	echo "entrypoint: no Vault token in $state: the vault-unseal service has not run" >&2
	exit 1
fi
VAULT_TOKEN=$(cat "$state/root-token")
export VAULT_TOKEN

if [ -f "$hsm/softhsm2.conf" ]; then
	echo "entrypoint: SoftHSM2 token kept in $hsm; checking it against Vault's PIN"
else
	echo "entrypoint: no SoftHSM2 token in $hsm yet; making one"
fi
quickpay keys provision-softhsm --dir "$hsm"
quickpay migrate
quickpay banks connect-sim --demo
exec quickpay serve --listen 0.0.0.0:8080
