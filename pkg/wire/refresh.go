package wire

// PathTokenRefresh is the hub's refresh endpoint: POST with a valid token
// as the bearer answers {"token": …, "expires_at": …}, the same claims with
// a fresh expiry (docs/control.md, "Token API"). Host agents renew their
// token there.
const PathTokenRefresh = "/api/v1/account/token/refresh"
