// Package tick runs a function on a ticker until a context ends: the one
// loop behind topcdn's heartbeats, polls, probes and samplers. Every waits
// an interval before the first call; NowAndEvery makes it at once.
package tick
