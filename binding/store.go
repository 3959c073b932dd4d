package binding

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The binding store: every SQL statement of the package, each filtered by
// merchant_id so another merchant's id finds nothing.

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// memberRow is a member with its identity ciphertexts.
type memberRow struct {
	Member
	NameFP, IDNumberFP []byte
	Verified           bool
}

// memberFrom reads a member with its identity fingerprints: its own, or
// those of the binding whose identity it keeps by reference.
const memberFrom = `SELECT m.id, m.merchant_id, m.external_id, m.kind, m.created_at,
	coalesce(m.name_fp, ib.holder_name_fp), coalesce(m.id_number_fp, ib.id_number_fp), m.identity_verified
	FROM members m LEFT JOIN bindings ib ON ib.id = m.identity_binding_id AND ib.merchant_id = m.merchant_id`

func scanMember(row pgx.Row) (memberRow, error) {
	var m memberRow
	err := row.Scan(&m.ID, &m.MerchantID, &m.ExternalID, &m.Kind, &m.CreatedAt, &m.NameFP, &m.IDNumberFP, &m.Verified)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNotFound
	}
	return m, err
}

const (
	whereMemberID         = ` WHERE m.merchant_id = $1 AND m.id = $2`
	whereMemberExternalID = ` WHERE m.merchant_id = $1 AND m.external_id = $2`
)

func getMember(ctx context.Context, q querier, merchantID, id string) (memberRow, error) {
	return scanMember(q.QueryRow(ctx, memberFrom+whereMemberID, merchantID, id))
}

func getMemberByExternalID(ctx context.Context, q querier, merchantID, externalID string) (memberRow, error) {
	return scanMember(q.QueryRow(ctx, memberFrom+whereMemberExternalID, merchantID, externalID))
}

// lockMember locks the member's row (where: whereMemberID or
// whereMemberExternalID, with the merchant and the key) and then reads it,
// as two statements in one round trip. One statement would not do: after
// waiting for the lock, Postgres re-reads only the locked row, not its
// join, so an identity another binding completed by reference while this
// one waited would not show.
// NO KEY UPDATE: it serializes the confirms that may complete the
// identity, and lets rows that refer to the member be written meanwhile.
func lockMember(ctx context.Context, tx pgx.Tx, where, merchantID, key string) (m memberRow, err error) {
	var batch pgx.Batch
	batch.Queue(`SELECT 1 FROM members m`+where+` FOR NO KEY UPDATE`, merchantID, key)
	batch.Queue(memberFrom+where, merchantID, key)
	br := tx.SendBatch(ctx, &batch)
	defer func() { err = errors.Join(err, br.Close()) }()
	if _, err := br.Exec(); err != nil {
		return memberRow{}, err
	}
	return scanMember(br.QueryRow())
}

// queueDeleteMember queues the removal of a member made in this transaction.
func queueDeleteMember(batch *pgx.Batch, merchantID, id string) {
	batch.Queue(`DELETE FROM members WHERE merchant_id = $1 AND id = $2`, merchantID, id)
}

// findMemberAndCard reads in one round trip the member with memberID, or
// else with externalID, and the merchant's active card with any of the
// fingerprints; nil for either that does not exist. b holds what the
// caller sends in the same round trip (the abuse limits' take), before
// these reads.
func findMemberAndCard(ctx context.Context, pool *pgxpool.Pool, b *pgx.Batch, merchantID, memberID, externalID string,
	fps [][]byte) (*memberRow, *Card, error) {
	var member *memberRow
	var card *Card
	where, key := whereMemberID, memberID
	if memberID == "" {
		where, key = whereMemberExternalID, externalID
	}
	b.Queue(memberFrom+where, merchantID, key).QueryRow(func(row pgx.Row) error {
		m, err := scanMember(row)
		if err == nil {
			member = &m
		}
		return ignoreNotFound(err)
	})
	for _, fp := range fps {
		b.Queue(activeCardByFP, merchantID, fp).QueryRow(func(row pgx.Row) error {
			c, err := scanCard(row)
			if err == nil && card == nil {
				card = &c
			}
			return ignoreNotFound(err)
		})
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, err
	}
	return member, card, nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// identity is a member's or a binding's encrypted identity.
type identity struct {
	NameCT, NameFP, IDNumberCT, IDNumberFP, PhoneCT []byte
}

// insertMember adds the explicit member m with the identity given
// (unverified); ErrMemberExists if the external id is taken (without
// aborting the transaction). Implicit members: insertMemberWithCard.
func insertMember(ctx context.Context, q querier, m Member, id identity) error {
	tag, err := q.Exec(ctx, `
		INSERT INTO members (id, merchant_id, external_id, kind, name_ct, name_fp, id_number_ct, id_number_fp,
		                     phone_ct, identity_verified, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, $10)
		ON CONFLICT (merchant_id, external_id) DO NOTHING`,
		m.ID, m.MerchantID, m.ExternalID, m.Kind, id.NameCT, id.NameFP, id.IDNumberCT, id.IDNumberFP, id.PhoneCT,
		m.CreatedAt)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrMemberExists
	}
	return nil
}

// queueSetMemberIdentity makes a member without a full identity keep the
// one a binding verified, by reference (its fingerprints are read through
// it wherever the member has none of its own).
func queueSetMemberIdentity(batch *pgx.Batch, merchantID, memberID string, b bindingRow) {
	batch.Queue(`UPDATE members SET identity_binding_id = $3, identity_verified = true
		WHERE merchant_id = $1 AND id = $2 AND identity_binding_id IS NULL`, merchantID, memberID, b.ID)
}

func queueMarkMemberVerified(batch *pgx.Batch, merchantID, memberID string) {
	batch.Queue(`UPDATE members SET identity_verified = true WHERE merchant_id = $1 AND id = $2`, merchantID, memberID)
}

// bindingRow is a binding with what the store keeps beside it.
type bindingRow struct {
	Binding
	BankBindRef string
	PANCT       []byte
	PANFP       []byte
	identity
	claim
}

// claim is a row's claim: the token of the call that holds it and when it
// lapses (migration 019).
type claim struct {
	ClaimedBy  string
	ClaimUntil *time.Time
}

// live reports whether a call holds the claim at now.
func (c claim) live(now time.Time) bool { return c.ClaimUntil != nil && c.ClaimUntil.After(now) }

const bindingCols = `id, merchant_id, coalesce(member_id, ''), coalesce(external_user_id, ''), status, bank_code, bank_name,
	card_type, masked_pan, last4, coalesce(card_id, ''), otp_expires_at, otp_attempts, otp_sends, otp_last_sent_at,
	coalesce(failure_code, ''), created_at, coalesce(bank_bind_ref, ''), pan_ct, pan_fp, holder_name_ct, holder_name_fp,
	id_number_ct, id_number_fp, phone_ct, coalesce(claimed_by, ''), claim_until`

func scanBinding(row pgx.Row) (bindingRow, error) { return scanBindingWith(row) }

// scanBindingWith scans bindingCols and then extra.
func scanBindingWith(row pgx.Row, extra ...any) (bindingRow, error) {
	var b bindingRow
	err := row.Scan(append([]any{&b.ID, &b.MerchantID, &b.MemberID, &b.ExternalUserID, &b.Status, &b.Card.BankCode, &b.Card.BankName,
		&b.Card.CardType, &b.Card.MaskedPAN, &b.Card.Last4, &b.CardID, &b.OTPExpiresAt, &b.OTPAttempts, &b.OTPSends,
		&b.OTPLastSentAt, &b.FailureCode, &b.CreatedAt, &b.BankBindRef, &b.PANCT, &b.PANFP, &b.NameCT, &b.NameFP,
		&b.IDNumberCT, &b.IDNumberFP, &b.PhoneCT, &b.ClaimedBy, &b.ClaimUntil}, extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, ErrNotFound
	}
	return b, err
}

func getBinding(ctx context.Context, q querier, merchantID, id string, forUpdate bool) (bindingRow, error) {
	sql := `SELECT ` + bindingCols + ` FROM bindings WHERE merchant_id = $1 AND id = $2`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	return scanBinding(q.QueryRow(ctx, sql, merchantID, id))
}

func queueInsertBinding(batch *pgx.Batch, b bindingRow) {
	batch.Queue(`
		INSERT INTO bindings (id, merchant_id, member_id, external_user_id, status, bank_code, bank_name, card_type,
		                      masked_pan, last4, pan_ct, pan_fp, holder_name_ct, holder_name_fp, id_number_ct,
		                      id_number_fp, phone_ct, bank_bind_ref, otp_expires_at, otp_attempts, otp_sends,
		                      otp_last_sent_at, card_id, created_at, updated_at)
		VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
		        NULLIF($18, ''), $19, $20, $21, $22, NULLIF($23, ''), $24, $24)`,
		b.ID, b.MerchantID, b.MemberID, b.ExternalUserID, b.Status, b.Card.BankCode, b.Card.BankName, b.Card.CardType,
		b.Card.MaskedPAN, b.Card.Last4, b.PANCT, b.PANFP, b.NameCT, b.NameFP, b.IDNumberCT, b.IDNumberFP, b.PhoneCT,
		b.BankBindRef, b.OTPExpiresAt, b.OTPAttempts, b.OTPSends, b.OTPLastSentAt, b.CardID, b.CreatedAt)
}

// queueUpdateBinding writes the mutable fields of b and releases any claim
// on it: every change of a binding is the answer of the call that held
// the claim, or is made while no live claim exists (a resend's
// reservation, an expiry).
func queueUpdateBinding(batch *pgx.Batch, b bindingRow, bankFailure string, now time.Time) {
	batch.Queue(`
	UPDATE bindings SET status = $3, member_id = NULLIF($4, ''), card_id = NULLIF($5, ''), otp_expires_at = $6,
	       otp_attempts = $7, otp_sends = $8, otp_last_sent_at = $9, failure_code = NULLIF($10, ''),
	       bank_failure_code = coalesce(NULLIF($11, ''), bank_failure_code), updated_at = $12,
	       claimed_by = NULL, claim_until = NULL
	WHERE merchant_id = $1 AND id = $2`,
		b.MerchantID, b.ID, b.Status, b.MemberID, b.CardID, b.OTPExpiresAt, b.OTPAttempts, b.OTPSends,
		b.OTPLastSentAt, b.FailureCode, bankFailure, now)
}

// claimBinding claims a binding that waits for a code, whose code has not
// run out and that no live claim holds, for the call with token until
// `until`, in one statement (its own transaction): ok is false if it is
// not such a binding. A claim past its claim_until is taken over; lapsed
// reports one was (read from the statement's snapshot: an audit detail,
// not a guard).
//
// The claim commits without waiting for its WAL flush (synchronous_commit
// off for this statement's transaction only): other instances see it at
// once, and only a crash of Postgres itself can lose it. A lost claim
// leaves the binding claimable while its call is at the bank: the next
// confirm asks the bank again and a repeat with the same code is answered
// with the same agreement, while the first call's answer finds it holds no
// claim and writes nothing. Waiting for the flush cost a confirm a tenth
// of its latency (docs/benchmarks.md).
func claimBinding(ctx context.Context, q querier, merchantID, id, token string, until, now time.Time) (b bindingRow, ok, lapsed bool, err error) {
	b, err = scanBindingWith(q.QueryRow(ctx, `UPDATE bindings SET claimed_by = $3, claim_until = $4
		FROM (SELECT claimed_by IS NOT NULL AS lapsed, set_config('synchronous_commit', 'off', true)
		      FROM bindings WHERE merchant_id = $1 AND id = $2) AS prev
		WHERE merchant_id = $1 AND id = $2 AND status = 'otp_sent' AND otp_expires_at >= $5
		  AND (claim_until IS NULL OR claim_until <= $5)
		RETURNING `+bindingCols+`, prev.lapsed`, merchantID, id, token, until, now), &lapsed)
	if errors.Is(err, ErrNotFound) {
		return b, false, false, nil
	}
	return b, err == nil, lapsed, err
}

const cardCols = `id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4, created_at`

// cardColsC is cardCols of a query that names cards "c".
const cardColsC = `c.id, c.merchant_id, c.member_id, c.status, c.bank_code, c.bank_name, c.card_type, c.masked_pan,
	c.last4, c.created_at`

func scanCard(row pgx.Row) (Card, error) { return scanCardWith(row) }

// scanCardWith scans cardCols and then extra.
func scanCardWith(row pgx.Row, extra ...any) (Card, error) {
	var c Card
	dest := append([]any{&c.ID, &c.MerchantID, &c.MemberID, &c.Status, &c.BankCode, &c.BankName, &c.CardType,
		&c.MaskedPAN, &c.Last4, &c.CreatedAt}, extra...)
	err := row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, err
}

// cardRow is a card with its sealed agreement number, the number's
// fingerprint (nil until computed: revoke.go), and its claim.
type cardRow struct {
	Card
	AgreementCT []byte
	AgreementFP []byte
	claim
}

const cardRowCols = cardCols + `, agreement_ct, agreement_fp, coalesce(claimed_by, ''), claim_until`

func scanCardRow(row pgx.Row) (cardRow, error) {
	var c cardRow
	var err error
	c.Card, err = scanCardWith(row, &c.AgreementCT, &c.AgreementFP, &c.ClaimedBy, &c.ClaimUntil)
	return c, err
}

func getCard(ctx context.Context, q querier, merchantID, id string, forUpdate bool) (cardRow, error) {
	sql := `SELECT ` + cardRowCols + ` FROM cards WHERE merchant_id = $1 AND id = $2`
	if forUpdate {
		// NO KEY: rows that reference the card (charge attempts being
		// claimed) take KEY SHARE on it, and must not wait on an unbind
		// that waits on them.
		sql += ` FOR NO KEY UPDATE`
	}
	return scanCardRow(q.QueryRow(ctx, sql, merchantID, id))
}

// claimCard claims an active card that no live claim holds, for the call
// with token until `until`, in one statement: false if it is not such a
// card. A claim past its claim_until is taken over.
func claimCard(ctx context.Context, q querier, merchantID, id, token string, until, now time.Time) (cardRow, bool, error) {
	c, err := scanCardRow(q.QueryRow(ctx, `UPDATE cards SET claimed_by = $3, claim_until = $4
		WHERE merchant_id = $1 AND id = $2 AND status = 'active' AND (claim_until IS NULL OR claim_until <= $5)
		RETURNING `+cardRowCols, merchantID, id, token, until, now))
	if errors.Is(err, ErrNotFound) {
		return c, false, nil
	}
	return c, err == nil, err
}

// queueReleaseCard releases the claim token holds on a card.
func queueReleaseCard(batch *pgx.Batch, merchantID, id, token string) {
	batch.Queue(`UPDATE cards SET claimed_by = NULL, claim_until = NULL
		WHERE merchant_id = $1 AND id = $2 AND claimed_by = $3`, merchantID, id, token)
}

// activeCardByFingerprint finds the merchant's active card with any of the
// fingerprints (one per live fp key version, so usually one query).
//
// One equality per query, not pan_fp = ANY($2), so that the unique index
// (merchant_id, pan_fp) serves each lookup. A plan cached before cards had
// statistics may still walk cards_member instead, until the table is
// analyzed (docs/decisions.md, "Plans cached before statistics").
func activeCardByFingerprint(ctx context.Context, q querier, merchantID string, fps [][]byte) (Card, error) {
	for _, fp := range fps {
		c, err := scanCard(q.QueryRow(ctx, activeCardByFP, merchantID, fp))
		if !errors.Is(err, ErrNotFound) {
			return c, err
		}
	}
	return Card{}, ErrNotFound
}

const activeCardByFP = `SELECT ` + cardCols + ` FROM cards WHERE merchant_id = $1 AND status = 'active' AND pan_fp = $2`

func listMemberCards(ctx context.Context, q querier, merchantID, memberID string) ([]Card, error) {
	rows, err := q.Query(ctx, `SELECT `+cardCols+` FROM cards WHERE merchant_id = $1 AND member_id = $2
		ORDER BY created_at, id`, merchantID, memberID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Card, error) { return scanCard(r) })
}

// errActiveCardExists: the one-active-card-per-number index refused a card.
var errActiveCardExists = errors.New("an active card with this number exists")

func insertCard(ctx context.Context, q querier, c Card, bindingID string, panCT, panFP, agreementCT []byte) error {
	tag, err := q.Exec(ctx, `INSERT INTO cards (`+cardInsertCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
		ON CONFLICT (merchant_id, pan_fp) WHERE status = 'active' DO NOTHING`,
		cardInsertArgs(c, bindingID, panCT, panFP, agreementCT)...)
	if err != nil {
		return fmt.Errorf("insert card: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errActiveCardExists
	}
	return nil
}

const cardInsertCols = `id, merchant_id, member_id, status, bank_code, bank_name, card_type, masked_pan, last4,
	pan_ct, pan_fp, agreement_ct, binding_id, created_at, updated_at`

// cardInsertArgs are $1–$14 of a card insert (updated_at is created_at).
func cardInsertArgs(c Card, bindingID string, panCT, panFP, agreementCT []byte) []any {
	return []any{c.ID, c.MerchantID, c.MemberID, c.Status, c.BankCode, c.BankName, c.CardType, c.MaskedPAN, c.Last4,
		panCT, panFP, agreementCT, bindingID, c.CreatedAt}
}

// insertMemberWithCard adds the implicit member m, whose identity is the
// binding's, and its card c in one statement, and reports what it wrote:
// neither if the external id is taken (c needs the existing member), the
// member alone if an active card with the number exists.
func insertMemberWithCard(ctx context.Context, q querier, m Member, bindingID string, c Card,
	panCT, panFP, agreementCT []byte) (memberWritten, cardWritten bool, err error) {
	args := append(cardInsertArgs(c, bindingID, panCT, panFP, agreementCT), m.ExternalID, m.Kind)
	err = q.QueryRow(ctx, `
		WITH m AS (
			INSERT INTO members (id, merchant_id, external_id, kind, identity_verified, identity_binding_id, created_at)
			VALUES ($3, $2, $15, $16, true, $13, $14)
			ON CONFLICT (merchant_id, external_id) DO NOTHING
			RETURNING id),
		c AS (
			INSERT INTO cards (`+cardInsertCols+`)
			SELECT $1, $2, m.id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14 FROM m
			ON CONFLICT (merchant_id, pan_fp) WHERE status = 'active' DO NOTHING
			RETURNING id)
		SELECT EXISTS (SELECT FROM m), EXISTS (SELECT FROM c)`, args...).Scan(&memberWritten, &cardWritten)
	if err != nil {
		return false, false, fmt.Errorf("insert member and card: %w", err)
	}
	return memberWritten, cardWritten, nil
}

// setActiveCardAgreement gives an active card a new agreement, whose
// fingerprint it has yet to get; false if the card is no longer active
// (ended while its row was waited for).
func setActiveCardAgreement(ctx context.Context, tx pgx.Tx, merchantID, id string, agreementCT []byte, at time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE cards SET agreement_ct = $3, agreement_fp = NULL, updated_at = $4
		WHERE merchant_id = $1 AND id = $2 AND status = 'active'`, merchantID, id, agreementCT, at)
	return tag.RowsAffected() == 1, err
}

// queueSetCardStatus ends a card and releases any claim on it.
func queueSetCardStatus(batch *pgx.Batch, merchantID, id string, status CardStatus, at time.Time) {
	batch.Queue(`UPDATE cards SET status = $3, updated_at = $4, claimed_by = NULL, claim_until = NULL
		WHERE merchant_id = $1 AND id = $2`, merchantID, id, status, at)
}

// cardNumberLock is the advisory lock key of a card number: its prefix,
// then the number's fingerprint in hex (CardsForCharging). The prefix is
// the one charge claims have always taken, so that claims of every
// version exclude one another.
const cardNumberLock = `hashtextextended('mandate.claim.pan:' || encode(fp, 'hex'), 0)`

// chargingCards takes, for tx, an advisory lock per card number of cardIDs
// (its fingerprint), in fingerprint order, and then reads each card's
// bank, a key shared by the cards of one number within the answer, and
// the ids of every card row with its number: two statements, one round
// trip. A card that does not exist is absent.
func chargingCards(ctx context.Context, tx pgx.Tx, cardIDs []string) (out map[string]ChargingCard, err error) {
	var batch pgx.Batch
	batch.Queue(`SELECT pg_advisory_xact_lock(`+cardNumberLock+`)
		FROM (SELECT DISTINCT pan_fp FROM cards WHERE id = ANY($1)) AS f(fp) ORDER BY fp`, cardIDs)
	batch.Queue(`SELECT k.id, k.bank_code, dense_rank() OVER (ORDER BY k.pan_fp), array_agg(sib.id ORDER BY sib.id)
		FROM cards k JOIN cards sib ON sib.pan_fp = k.pan_fp
		WHERE k.id = ANY($1) GROUP BY k.id, k.bank_code, k.pan_fp`, cardIDs)
	br := tx.SendBatch(ctx, &batch)
	defer func() { err = errors.Join(err, br.Close()) }()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	out = make(map[string]ChargingCard, len(cardIDs))
	var id string
	var c ChargingCard
	if _, err := pgx.ForEachRow(rows, []any{&id, &c.BankCode, &c.Number, &c.SameNumber}, func() error {
		out[id] = c
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// Agreement fingerprints and bank notices (revoke.go, migration 026). A
// bank's notice names an agreement of the platform's merchant number at
// that bank, not a merchant: these lookups span merchants.

// agreementHeld reports whether a card of bankCode, in any status, has an
// agreement with one of the fingerprints fps.
func agreementHeld(ctx context.Context, q querier, bankCode string, fps [][]byte) (bool, error) {
	var held bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM cards WHERE bank_code = $1 AND agreement_fp = ANY($2))`,
		bankCode, fps).Scan(&held)
	return held, err
}

// lockCardsByAgreement locks, in id order, and returns bankCode's cards,
// in any status, whose agreement has one of the fingerprints fps. NO KEY
// UPDATE, as getCard.
func lockCardsByAgreement(ctx context.Context, tx pgx.Tx, bankCode string, fps [][]byte) ([]cardRow, error) {
	rows, err := tx.Query(ctx, `SELECT `+cardRowCols+` FROM cards WHERE bank_code = $1 AND agreement_fp = ANY($2)
		ORDER BY id FOR NO KEY UPDATE`, bankCode, fps)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (cardRow, error) { return scanCardRow(r) })
}

// unfingerprintedAgreements returns up to limit of bankCode's active cards
// whose agreement has no fingerprint, by id after afterID (their ids,
// merchants and sealed agreements only).
func unfingerprintedAgreements(ctx context.Context, q querier, bankCode, afterID string, limit int) ([]cardRow, error) {
	rows, err := q.Query(ctx, `SELECT id, merchant_id, agreement_ct FROM cards
		WHERE bank_code = $1 AND status = 'active' AND agreement_fp IS NULL AND id > $2 ORDER BY id LIMIT $3`,
		bankCode, afterID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (cardRow, error) {
		var c cardRow
		err := r.Scan(&c.ID, &c.MerchantID, &c.AgreementCT)
		return c, err
	})
}

// queueFillAgreementFP sets the fingerprint of a card's agreement if the
// card still has none and still holds the agreement sealed as agreementCT.
func queueFillAgreementFP(batch *pgx.Batch, merchantID, id string, agreementCT, fp []byte) {
	batch.Queue(`UPDATE cards SET agreement_fp = $4
		WHERE merchant_id = $1 AND id = $2 AND agreement_fp IS NULL AND agreement_ct = $3`, merchantID, id, agreementCT, fp)
}

// queueSetAgreementFP sets the fingerprint of a card's agreement, in the
// transaction that stores the agreement.
func queueSetAgreementFP(batch *pgx.Batch, merchantID, id string, fp []byte) {
	batch.Queue(`UPDATE cards SET agreement_fp = $3 WHERE merchant_id = $1 AND id = $2`, merchantID, id, fp)
}

// bankNoticeRow is a row of bank_notices.
type bankNoticeRow struct {
	ID, BankCode, Kind       string
	AgreementCT, AgreementFP []byte
	EndedAt, ReceivedAt      time.Time
	Outcome                  NoticeOutcome
	MerchantID               string // empty: none
	CardIDs                  []string
}

// insertBankNotice records n unless the same notice (bank, kind, agreement
// fingerprint, time) is recorded already, and sets *id to the id of the
// row that records it (left as it is in the rare case that row committed
// after this statement began).
func insertBankNotice(ctx context.Context, q querier, n bankNoticeRow, id *string) error {
	if n.CardIDs == nil {
		n.CardIDs = []string{}
	}
	err := q.QueryRow(ctx, `WITH ins AS (
			INSERT INTO bank_notices (id, bank_code, kind, agreement_ct, agreement_fp, ended_at, outcome, merchant_id,
			                          card_ids, received_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''), $9, $10)
			ON CONFLICT (bank_code, kind, agreement_fp, ended_at) DO NOTHING
			RETURNING id)
		SELECT id FROM ins
		UNION ALL
		SELECT id FROM bank_notices WHERE bank_code = $2 AND kind = $3 AND agreement_fp = $5 AND ended_at = $6
		LIMIT 1`,
		n.ID, n.BankCode, n.Kind, n.AgreementCT, n.AgreementFP, n.EndedAt, n.Outcome, n.MerchantID, n.CardIDs,
		n.ReceivedAt).Scan(id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record bank notice: %w", err)
	}
	return nil
}
