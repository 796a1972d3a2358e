package proc

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

const (
	// keptLines is how many of the last output lines a Process keeps,
	// for WaitLine and Tail.
	keptLines = 256
	// maxLine bounds a kept line: a longer run without a newline is kept
	// in pieces of this size.
	maxLine = 64 << 10
	// noteLines is how many output lines an error message ends with.
	noteLines = 20
)

// output is a process's standard output and standard error: it passes
// everything on to dst and keeps the last lines.
type output struct {
	mu      sync.Mutex
	dst     io.Writer // may be nil
	partial []byte    // the line being written
	lines   []string  // the last keptLines complete lines
	total   int       // how many lines were completed in all
	grew    chan struct{}
}

func newOutput(dst io.Writer) *output {
	return &output{dst: dst, grew: make(chan struct{})}
}

// Write implements io.Writer. It never fails: a log that cannot take
// the output must not stop the process.
func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dst != nil {
		o.dst.Write(b)
	}
	o.partial = append(o.partial, b...)
	rest := o.partial
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		o.addLocked(string(rest[:i]))
		rest = rest[i+1:]
	}
	for len(rest) > maxLine {
		o.addLocked(string(rest[:maxLine]))
		rest = rest[maxLine:]
	}
	o.partial = append(o.partial[:0], rest...)
	return len(b), nil
}

// flush keeps a last line that has no newline.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.partial) > 0 {
		o.addLocked(string(o.partial))
		o.partial = o.partial[:0]
	}
}

func (o *output) addLocked(line string) {
	o.lines = append(o.lines, strings.TrimSuffix(line, "\r"))
	if len(o.lines) > keptLines {
		o.lines = o.lines[len(o.lines)-keptLines:]
	}
	o.total++
	close(o.grew)
	o.grew = make(chan struct{})
}

// find looks for a line that starts with prefix among the kept lines
// from number *next on, and moves *next past the lines it looked at. If
// there is none, it returns a channel closed when the next line comes.
func (o *output) find(prefix string, next *int) (rest string, ok bool, grew <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	first := o.total - len(o.lines) // the number of lines[0]
	for i := max(*next, first); i < o.total; i++ {
		if rest, ok := strings.CutPrefix(o.lines[i-first], prefix); ok {
			*next = i + 1
			return strings.TrimSpace(rest), true, nil
		}
	}
	*next = o.total
	return "", false, o.grew
}

// tail returns the last n kept lines.
func (o *output) tail(n int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	n = min(max(n, 0), len(o.lines))
	return strings.Join(o.lines[len(o.lines)-n:], "\n")
}

// note is the tail for an error message: the last lines, indented, on
// lines of their own; "" if the process wrote nothing.
func (o *output) note() string {
	t := o.tail(noteLines)
	if t == "" {
		return ""
	}
	return "\n\t" + strings.ReplaceAll(t, "\n", "\n\t")
}
