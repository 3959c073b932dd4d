package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDevFaultsOnlyUnderTheirTag: the dev-only HSM fault switch
// (vaultkeys/devfaults.go, cmd/quickpay/devfaults_on.go) is compiled into
// a binary built with -tags devfaults, the soak's, and into no other.
func TestDevFaultsOnlyUnderTheirTag(t *testing.T) {
	for _, tc := range []struct {
		pkg, file string
	}{
		{"github.com/quickpay/quickpay/vaultkeys", "devfaults.go"},
		{"github.com/quickpay/quickpay/cmd/quickpay", "devfaults_on.go"},
	} {
		for _, tags := range []string{"", "devfaults"} {
			out, err := exec.Command("go", "list", "-tags", tags, "-f", "{{join .GoFiles \" \"}}", tc.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -tags %q %s: %v\n%s", tags, tc.pkg, err, out)
			}
			files := strings.Fields(string(out))
			if got, want := slices.Contains(files, tc.file), tags == "devfaults"; got != want {
				t.Errorf("go list -tags %q %s: %s compiled = %v, want %v (files %v)", tags, tc.pkg, tc.file, got, want, files)
			}
		}
	}
}
