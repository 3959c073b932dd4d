package main

import "testing"

func TestConsoleSecure(t *testing.T) {
	for _, tc := range []struct {
		listen, url string
		want        bool
	}{
		{"127.0.0.1:8081", "", false},
		{"0.0.0.0:8081", "", true},
		{"127.0.0.1:8081", "https://console.example.cn", true}, // behind a TLS proxy
		{"127.0.0.1:8081", "http://127.0.0.1:8081", false},     // make run
		{"10.0.0.5:8081", "http://10.0.0.5:8081", false},
	} {
		if got := consoleSecure(tc.listen, tc.url); got != tc.want {
			t.Errorf("consoleSecure(%q, %q) = %v, want %v", tc.listen, tc.url, got, tc.want)
		}
	}
}
