package publish

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress reports how far a long operation (import, upload) has come.
// Add may be called from several goroutines.
type Progress interface {
	// Add records n more bytes done.
	Add(n int64)
	// Finish ends the report.
	Finish()
}

// NewProgress reports progress of an operation over total bytes to w: a
// bar with bytes, rate and ETA when w is a terminal, plain lines every few
// seconds otherwise (logs, CI). A nil w reports nothing.
func NewProgress(w io.Writer, label string, total int64) Progress {
	if w == nil {
		return nopProgress{}
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barProgress{bar: progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)}
	}
	return &lineProgress{w: w, label: label, total: total, start: time.Now(), every: 2 * time.Second}
}

type nopProgress struct{}

func (nopProgress) Add(int64) {}
func (nopProgress) Finish()   {}

type barProgress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func (b *barProgress) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.bar.Add64(n)
}

func (b *barProgress) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.bar.Finish()
}

// lineProgress prints a plain line at most every interval, and at the end.
type lineProgress struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	done  int64
	start time.Time
	last  time.Time
	every time.Duration
}

func (l *lineProgress) Add(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done += n
	if now := time.Now(); now.Sub(l.last) >= l.every {
		l.last = now
		l.print(now)
	}
}

func (l *lineProgress) Finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.print(time.Now())
}

func (l *lineProgress) print(now time.Time) {
	elapsed := now.Sub(l.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(l.done) / elapsed
	}
	pct := 100.0
	if l.total > 0 {
		pct = 100 * float64(l.done) / float64(l.total)
	}
	eta := "-"
	if rate > 0 && l.done < l.total {
		eta = time.Duration(float64(l.total-l.done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(l.w, "%s: %s / %s (%.0f%%), %s/s, ETA %s\n", l.label,
		humanize.IBytes(uint64(l.done)), humanize.IBytes(uint64(l.total)), pct, humanize.IBytes(uint64(rate)), eta)
}
