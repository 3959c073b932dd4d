// Package operators keeps the institution's staff who use the operator
// console (DESIGN.md "Operator console"): their roles, passwords (a slow
// hash), TOTP secrets (encrypted under the data key), failed-login lockout
// and cookie sessions with idle and absolute timeouts.
package operators
