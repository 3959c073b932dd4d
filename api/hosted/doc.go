// Package hosted serves the hosted binding page: the mobile page a
// merchant sends its user to (a binding session's url) where the user
// binds a card, and with mandate terms gives the consent, without the
// merchant seeing any card data. docs/hosted.md describes it for people.
//
// The page is plain HTML forms that work without JavaScript; one embedded
// script only enhances (resend countdowns, a card-type hint from the BIN
// router through a same-origin JSON endpoint) and one embedded stylesheet
// styles it. It is in Chinese, or English when Accept-Language prefers it.
//
// Every step calls the domain services the API calls (binding.Service's
// StartBinding, Resend and Confirm; mandate.Service's Create, Resend and
// Confirm), so each rule of the API holds; their refusals are shown as
// sentences in the user's language, never as JSON. A successful form post
// answers 303 to the session's page (post, redirect, get), whose step
// follows from the session's binding and mandate; the last one answers
// 303 to the session's return_url. A post is served only at the step it
// belongs to (else 303 to the page), and the card form's refused
// attempts are counted per session (binding.MaxSessionRefusals).
//
// # Security
//
// Every answer carries a strict Content-Security-Policy (nothing from
// another origin, no inline script or style, no framing), Cache-Control:
// no-store, nosniff and no referrer. Every form carries a CSRF token that
// must equal the per-session secret of the cookie set when the link is
// first opened (HttpOnly, SameSite=Strict, Secure when Config.PublicURL
// is https, scoped to the session's path). Card data travels only in POST
// bodies; the page never writes a card number, ID number, expiry, CVV2 or
// code back into its HTML (the name and phone are kept after an error).
package hosted
