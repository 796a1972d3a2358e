package tick_test

import (
	"context"
	"fmt"
	"time"

	"github.com/topcdn/topcdn/internal/tick"
)

func ExampleNowAndEvery() {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	tick.NowAndEvery(ctx, time.Millisecond, func(context.Context) {
		n++
		fmt.Println("poll", n)
		if n == 3 {
			cancel()
		}
	})
	// Output:
	// poll 1
	// poll 2
	// poll 3
}
