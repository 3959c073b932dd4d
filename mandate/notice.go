package mandate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Pre-debit notices. A run claims a batch of due notices (a lease on the
// clock, committed at once), texts each member outside any transaction,
// and records each notice that went out (notice_sent_at and the
// charge.pre_debit_notice event) in a short transaction of its own. A
// notice the carrier refused is released for the next run.
//
// Crash window: a run that dies after a text and before its record has
// texted that one notice; its claim runs out (noticeLease) and the next
// run texts it again. Every other notice of the batch is either recorded
// or not yet texted: at most one notice per run is texted twice, never a
// batch.

const (
	// noticeBatch is how many notices one claim takes.
	noticeBatch = 100
	// noticeLease is how long a run holds the notices it claimed: longer
	// than a batch of texts can take (noticeBatch sends, each bounded by
	// the carrier's timeout).
	noticeLease = 30 * time.Minute
)

// notice is a claimed pre-debit notice: its charge, and what its text
// names.
type notice struct {
	Charge
	cardID, reference string
}

// sendNotices texts the member and emits charge.pre_debit_notice for one
// batch of charges whose notice is due, other than those in skip (not
// nil). It returns how many went out and the charges whose notice did not
// (the carrier refused it, or it failed and is logged): those are tried
// again on a later run, and their charges wait. One notice's failure does
// not stop the others, nor the run's claim of due charges. Errors: the
// claim's, or the context's.
func (s *Service) sendNotices(ctx context.Context, asOf time.Time, skip []string) (int, []string, error) {
	now := s.now()
	list, err := claimNotices(ctx, s.pool, asOf, now, now.Add(noticeLease), skip, noticeBatch)
	if err != nil {
		return 0, nil, err
	}
	sent := 0
	var refused []string
	for i, n := range list {
		if ctx.Err() != nil {
			// The run was stopped: the notices not reached go back.
			rest := make([]string, 0, len(list)-i)
			for _, r := range list[i:] {
				rest = append(rest, r.ID)
			}
			return sent, refused, joinRelease(ctx.Err(), s.releaseNotices(ctx, rest))
		}
		texted, err := s.sendNotice(ctx, n)
		switch {
		case err == nil && texted:
			sent++
		case err == nil:
			refused = append(refused, n.ID) // the carrier refused it: released
		case texted:
			// Texted and not recorded: it keeps its lease, so it is texted
			// again only once the lease passes (as after a crash); its
			// charge waits. The rest of the batch goes on.
			s.log.Error("pre-debit notice texted but not recorded; texted again once its claim runs out",
				"charge", n.ID, "err", err)
			refused = append(refused, n.ID)
		default:
			s.log.Error("pre-debit notice not sent; the next run tries again", "charge", n.ID, "err", err)
			refused = append(refused, n.ID)
			if rerr := s.releaseNotices(ctx, []string{n.ID}); rerr != nil {
				s.log.Error("pre-debit notice not released; it waits for its claim to run out", "charge", n.ID, "err", rerr)
			}
		}
	}
	return sent, refused, nil
}

// sendNotice texts one claimed notice and records it. It reports whether
// the text went out; not texted and no error: the carrier refused it, and
// it is released for the next run.
func (s *Service) sendNotice(ctx context.Context, n notice) (bool, error) {
	card, phone, err := s.cfg.Cards.CardPhone(ctx, s.pool, n.MerchantID, n.cardID, sensitive.Access{
		MerchantID: n.MerchantID, Actor: "worker:charges", Subject: n.cardID, Reason: "pre-debit notice"})
	if err != nil {
		return false, fmt.Errorf("notice of %s: %w", n.ID, err)
	}
	if err := s.cfg.SMS.Send(ctx, phone, noticeText(n, card.Last4)); err != nil {
		s.log.Warn("pre-debit notice not sent; next run tries again", "charge", n.ID, "err", err)
		return false, s.releaseNotices(ctx, []string{n.ID})
	}
	// Texted: recorded whatever the caller does now, bounded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	return true, db.InTx(rctx, s.pool, func(tx pgx.Tx) error {
		now := s.now()
		recorded, err := recordNotice(rctx, tx, n.ID, now)
		if err != nil || !recorded {
			// Not recorded: its charge stopped (the mandate was paused or
			// cancelled) while the text went out.
			return err
		}
		n.Status, n.NoticeSentAt = ChargeScheduled, now
		return s.emit(rctx, tx, n.MerchantID, "charge.pre_debit_notice", chargeEvent(n.Charge))
	})
}

// releaseNotices gives claimed notices back for the next run, whatever
// the caller does now.
func (s *Service) releaseNotices(ctx context.Context, ids []string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	return releaseNotices(rctx, s.pool, ids)
}

func joinRelease(err, rerr error) error {
	if rerr != nil {
		return fmt.Errorf("%w (and releasing the batch's other notices: %v)", err, rerr)
	}
	return err
}
