// Package pagekit holds what quickpay's server-rendered pages (the hosted
// binding page, the operator console) share: their security headers, their
// form secrets (CSRF tokens, one-time keys) and their embedded assets.
package pagekit

import (
	"crypto/rand"
	"encoding/base64"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/labstack/echo/v4"
)

// SetHeaders sets a page's security headers: its Content-Security-Policy,
// no caching, no sniffing, no referrer, no framing.
func SetHeaders(h http.Header, csp string) {
	h.Set("Content-Security-Policy", csp)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// Headers is middleware setting SetHeaders(csp) on every answer.
func Headers(csp string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			SetHeaders(c.Response().Header(), csp)
			return next(c)
		}
	}
}

// NewSecret returns 32 random bytes, base64url: a CSRF token or a form's
// one-time key.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ValidSecret reports whether s has NewSecret's form (not whether it is
// the right one: compare that in constant time).
func ValidSecret(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// Assets serves the files of dir in fsys by their base name (the route's
// :file), with the type their extension says; others are 404.
func Assets(fsys fs.FS, dir string) echo.HandlerFunc {
	return func(c echo.Context) error {
		name := path.Base(c.Param("file"))
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return c.NoContent(http.StatusNotFound)
		}
		return c.Blob(http.StatusOK, mime.TypeByExtension(path.Ext(name)), b)
	}
}
