package internal_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayers fails when a file under internal/ (tests included) imports a
// layer above it: api, a domain package or a command.
func TestLayers(t *testing.T) {
	const module = "github.com/quickpay/quickpay/"
	above := []string{"api", "binding", "mandate", "cmd"}
	checked := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "devvault" {
			return filepath.SkipDir // its own module: a Vault server core
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rest, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			for _, a := range above {
				if rest == a || strings.HasPrefix(rest, a+"/") {
					t.Errorf("internal/%s imports %s: internal/ is the bottom layer", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked %d files: the walk did not find internal/", checked)
	}
}
