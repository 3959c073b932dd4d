package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"
)

// OpenAPIPath is where RegisterOpenAPI serves the document.
const OpenAPIPath = "/openapi.json"

//go:embed openapi.yaml
var openapiYAML []byte

// loadOpenAPI parses and validates the embedded document on first use. It is
// package-level only because the document is a constant of the binary: the
// result never changes after the first call.
var loadOpenAPI = sync.OnceValues(func() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapiYAML)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	return doc, nil
})

// openapiJSON is the document as served, rendered once.
var openapiJSON = sync.OnceValues(func() ([]byte, error) {
	doc, err := loadOpenAPI()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render openapi.json: %w", err)
	}
	return b, nil
})

// OpenAPIDocument returns the API's OpenAPI 3.0.3 document (api/openapi.yaml),
// loaded and validated once. The document is shared: callers must not modify
// it. The error is the same on every call.
func OpenAPIDocument() (*openapi3.T, error) { return loadOpenAPI() }

// RegisterOpenAPI serves the document as JSON at GET /openapi.json, without
// authentication. It fails if the document does not load and validate.
func RegisterOpenAPI(e *echo.Echo) error {
	body, err := openapiJSON()
	if err != nil {
		return err
	}
	e.GET(OpenAPIPath, func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, body)
	})
	return nil
}
