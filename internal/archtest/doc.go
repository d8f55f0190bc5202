// Package archtest holds tests of the module's structure: which packages may
// import which (DESIGN.md §4), and that every package is documented.
package archtest
