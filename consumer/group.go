package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// pipeline is one consumer group of a Run: the group of the consumer's
// topics and, with retry tiers, the group of the retry topics.
//
// Each generation of the group (one assignment, between two rebalances)
// gets its own partition workers, and offsets are committed only through
// that generation, for the partitions it assigned. When the generation
// ends, the workers stop fetching, drop the messages they had not started,
// let running handlers finish within the drain timeout and commit what
// finished; only then does the member rejoin. So a member never handles a
// buffered message of a partition it lost, and never commits a partition's
// offset in a later generation, which could rewind the partition's new
// owner. This is the eager protocol's contract, as Kafka's own clients
// keep it with their partitions-revoked callback.
type pipeline struct {
	name  string
	group *kafka.ConsumerGroup
	holds sync.WaitGroup // functions holding the group's generations open
}

// consume works p's generations one after the other until shutdown, and
// returns the error of the final commit of the last one.
func (r *run) consume(p *pipeline) error {
	for {
		gen, err := p.group.Next(r.ctx)
		if err != nil {
			if r.ctx.Err() != nil {
				return nil
			}
			// kafka-go backs off before it tries to join again.
			r.log.Warn("consumer: join group", slog.String("group", p.name), slog.Any("error", err))
			continue
		}
		err = r.generation(p, gen)
		if r.ctx.Err() != nil {
			return err
		}
		if err != nil {
			r.log.Warn("consumer: commit offsets at the end of a generation", slog.Any("error", err))
		}
	}
}

// generation works one generation of p: a worker per assigned partition
// and a commit loop, until the generation ends or shutdown begins. Then
// the partitions drain and their finished offsets are committed with this
// generation; the member rejoins only after that.
func (r *run) generation(p *pipeline, gen *kafka.Generation) error {
	ended, release := p.hold(gen)
	defer release()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	parts, err := r.assigned(ctx, gen)
	if err != nil {
		r.fail(err)
		return nil
	}
	var wg sync.WaitGroup
	for _, pt := range parts {
		wg.Go(pt.run)
	}
	wg.Go(func() { r.commitLoop(ctx, gen, parts) })
	select {
	case <-ended:
		cancel()
	case <-ctx.Done():
	}
	wg.Wait()
	return r.commit(gen, parts)
}

// hold starts a function in gen that reports the generation's end on ended
// and keeps the generation open until release is called. kafka-go rejoins
// only after every function of a generation returned, so the member
// rejoins after its partitions drained and committed. At shutdown the
// function returns when ConsumerGroup.Close ends the generation, so the
// member leaves the group instead of rejoining it.
func (p *pipeline) hold(gen *kafka.Generation) (ended <-chan struct{}, release func()) {
	end, rel := make(chan struct{}), make(chan struct{})
	p.holds.Add(1)
	gen.Start(func(ctx context.Context) {
		defer p.holds.Done()
		<-ctx.Done()
		close(end)
		<-rel
	})
	return end, sync.OnceFunc(func() { close(rel) })
}

// assigned returns a partition worker for every partition gen assigns.
func (r *run) assigned(ctx context.Context, gen *kafka.Generation) ([]*partition, error) {
	var parts []*partition
	for topic, as := range gen.Assignments {
		for _, a := range as {
			pt, err := r.newPartition(ctx, topic, a)
			if err != nil {
				for _, pt := range parts {
					pt.close()
					pt.cancelHandlers()
				}
				return nil, err
			}
			parts = append(parts, pt)
		}
	}
	return parts, nil
}

// commitLoop commits the low watermarks of parts every commit interval
// until ctx is done.
func (r *run) commitLoop(ctx context.Context, gen *kafka.Generation, parts []*partition) {
	t := time.NewTicker(r.c.o.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.commit(gen, parts); err != nil && ctx.Err() == nil {
				r.log.Warn("consumer: commit offsets", slog.Any("error", err))
			}
		}
	}
}

// commit commits, in gen, the low watermark of every partition of parts
// that moved since its last commit. Kafka stores the next offset to read:
// the watermark + 1.
func (r *run) commit(gen *kafka.Generation, parts []*partition) error {
	offsets := map[string]map[int]int64{}
	lows := map[*partition]int64{}
	for _, pt := range parts {
		low, ok := pt.track.pending()
		if !ok {
			continue
		}
		if offsets[pt.tp.topic] == nil {
			offsets[pt.tp.topic] = map[int]int64{}
		}
		offsets[pt.tp.topic][pt.tp.partition] = low + 1
		lows[pt] = low
	}
	if len(lows) == 0 {
		return nil
	}
	if err := gen.CommitOffsets(offsets); err != nil {
		return fmt.Errorf("consumer: commit offsets of %d partitions in generation %d of group %s: %w",
			len(lows), gen.ID, gen.GroupID, err)
	}
	for pt, low := range lows {
		pt.track.committed(low)
	}
	return nil
}
