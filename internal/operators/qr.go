package operators

import "errors"

// QRCode renders an otpauth:// URI as a PNG QR code, for an enrolment page.
func QRCode(uri string) (png []byte, err error) {
	return nil, errors.New("operators: not implemented yet")
}

// QRTerminal renders an otpauth:// URI as a QR code drawn with Unicode
// half blocks, for a terminal.
func QRTerminal(uri string) (string, error) {
	return "", errors.New("operators: not implemented yet")
}
