// Package proc runs the child processes of topcdn's end-to-end tests, of
// devnet and of bench: it starts a command with its standard output and
// error going to a log file or writer, keeps the last lines for error
// messages, waits until the process is ready (it prints a line, an HTTP
// health URL answers 2xx, or any other check passes), and stops it with
// SIGTERM, then SIGKILL after a grace period.
//
// Every wait is bounded by a context and ends early, with an error that
// holds the tail of the output, if the process exits.
package proc
