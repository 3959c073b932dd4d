package api_test

import "strings"

// allLogs is every log line the package's tests captured (newLogBuf) or
// wrote through slog.Default (TestMain), for the package's leak scan
// (testenv.ScanPackage). TestE2E's own scan also covers the values it
// made up for refusals, which no bank holds.
func allLogs() string {
	var b strings.Builder
	logBufs.Lock()
	defer logBufs.Unlock()
	for _, l := range logBufs.all {
		b.WriteString(l.String())
	}
	return b.String()
}
