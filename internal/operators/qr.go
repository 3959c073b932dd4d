package operators

import (
	"fmt"

	qrcode "github.com/skip2/go-qrcode"
)

// qrPNGSize is the side of QRCode's image in pixels: large enough for a
// phone to read off a screen.
const qrPNGSize = 256

// QRCode renders an otpauth:// URI as a PNG QR code, for an enrolment page.
// The URI holds the TOTP secret: the image is as secret as the URI.
func QRCode(uri string) (png []byte, err error) {
	png, err = qrcode.Encode(uri, qrcode.Medium, qrPNGSize)
	if err != nil {
		// go-qrcode's errors name sizes, never the content.
		return nil, fmt.Errorf("qr code: %w", err)
	}
	return png, nil
}

// QRTerminal renders an otpauth:// URI as a QR code drawn with Unicode half
// blocks (two modules a character cell), for a terminal: dark text on a
// light background or the reverse both scan, since the quiet zone is drawn
// too.
func QRTerminal(uri string) (string, error) {
	q, err := qrcode.New(uri, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return q.ToSmallString(false), nil
}
