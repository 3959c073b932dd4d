// Package console is the operator console: server-rendered pages for the
// institution's staff, on a listener of its own (DESIGN.md "Operator
// console").
package console
