package testenv

import "testing"

func TestWithDatabaseKeepsTheServerAddress(t *testing.T) {
	for _, c := range []struct{ admin, want string }{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
			"postgres://postgres@127.0.0.1:5432/qp_test_x?sslmode=disable"},
		{"postgres://postgres@/postgres?host=/var/run/postgresql",
			"postgres://postgres@/qp_test_x?host=%2Fvar%2Frun%2Fpostgresql&sslmode=disable"},
		{"postgresql://app:secret@db.internal:6432/admin?sslmode=require",
			"postgresql://app:secret@db.internal:6432/qp_test_x?sslmode=require"},
	} {
		got, err := withDatabase(c.admin, "qp_test_x")
		if err != nil || got != c.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", c.admin, got, err, c.want)
		}
	}
	if _, err := withDatabase("host=/tmp dbname=postgres", "qp_test_x"); err == nil {
		t.Error("a keyword DSN was accepted; want an error naming the URL form")
	}
}
