package main

import (
	_ "github.com/exaring/otelpgx"
	_ "github.com/pquerna/otp/totp"
	_ "github.com/riverqueue/rivercontrib/otelriver"
	_ "github.com/skip2/go-qrcode"
	_ "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	_ "go.opentelemetry.io/otel"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "riverqueue.com/riverui"
)
