package binding

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/quickpay/quickpay/internal/ids"
	"github.com/quickpay/quickpay/internal/sensitive"
)

// Members: explicit members, registered by the merchant before any
// binding, and the identity checks every binding makes against its member.
// Implicit members are made by the confirm that binds their first card
// (confirm.go).

// MemberInput creates an explicit member.
type MemberInput struct {
	ExternalID string
	Name       string
	IDNumber   sensitive.IDNumber
	Phone      string
}

// CreateMember registers an explicit member. Errors: *FieldError,
// ErrMemberExists.
func (s *Service) CreateMember(ctx context.Context, merchantID string, in MemberInput) (Member, error) {
	now := s.now()
	switch {
	case !ValidExternalID(in.ExternalID):
		return Member{}, &FieldError{Field: "external_id", Message: "must be 1–128 printable characters"}
	case in.Name != "" && !ValidName(in.Name):
		return Member{}, &FieldError{Field: "name", Message: "must be 2–30 letters"}
	case !in.IDNumber.IsZero() && !ValidResidentID(in.IDNumber.Reveal(), now):
		return Member{}, &FieldError{Field: "id_number", Message: "is not a valid resident ID number"}
	case in.Phone != "" && !ValidMobile(in.Phone):
		return Member{}, &FieldError{Field: "phone", Message: "is not a mainland mobile number"}
	}
	m := Member{ID: ids.New("mem"), MerchantID: merchantID, ExternalID: in.ExternalID, Kind: KindExplicit, CreatedAt: now}
	id, err := s.sealIdentity(ctx, func(field string) []byte { return MemberAAD(merchantID, m.ID, field) },
		in.Name, in.IDNumber, nil, in.Phone)
	if err != nil {
		return Member{}, err
	}
	if err := insertMember(ctx, s.pool, m, id); err != nil {
		return Member{}, fmt.Errorf("create member: %w", err)
	}
	return m, nil
}

// sealIdentity encrypts and fingerprints the identity fields given; idFP
// is the ID number's fingerprint under the current fp key if the caller
// made it already (nil: it is made here).
func (s *Service) sealIdentity(ctx context.Context, aad func(field string) []byte, name string, idNo sensitive.IDNumber,
	idFP []byte, phone string) (identity, error) {
	id := identity{IDNumberFP: idFP}
	var err error
	// Stored normalized, so that a fingerprint recomputed from the plaintext
	// (after an fp key rotation) equals the one made here.
	name = normName(name)
	if name != "" {
		if id.NameCT, err = s.vault.Encrypt(ctx, []byte(name), aad("name")); err != nil {
			return id, err
		}
		if id.NameFP, err = s.vault.Fingerprint(ctx, DomainName, []byte(normName(name))); err != nil {
			return id, err
		}
	}
	if !idNo.IsZero() {
		if id.IDNumberCT, err = s.vault.Encrypt(ctx, []byte(normID(idNo.Reveal())), aad("id_number")); err != nil {
			return id, err
		}
		if id.IDNumberFP == nil {
			if id.IDNumberFP, err = s.idFP(ctx, idNo); err != nil {
				return id, err
			}
		}
	}
	if phone != "" {
		if id.PhoneCT, err = s.vault.Encrypt(ctx, []byte(phone), aad("phone")); err != nil {
			return id, err
		}
	}
	return id, nil
}

// idFP fingerprints an ID number, normalized, under the current fp key.
func (s *Service) idFP(ctx context.Context, idNo sensitive.IDNumber) ([]byte, error) {
	return s.vault.Fingerprint(ctx, DomainIDNumber, []byte(normID(idNo.Reveal())))
}

// GetMember returns one of the merchant's members. Errors: ErrNotFound.
func (s *Service) GetMember(ctx context.Context, merchantID, id string) (Member, error) {
	m, err := getMember(ctx, s.pool, merchantID, id)
	return m.Member, err
}

// FindMember returns the merchant's member with externalID. Errors: ErrNotFound.
func (s *Service) FindMember(ctx context.Context, merchantID, externalID string) (Member, error) {
	m, err := getMemberByExternalID(ctx, s.pool, merchantID, externalID)
	return m.Member, err
}

// checkIdentity refuses a holder or ID number other than the member's;
// idFP is the ID number's fingerprint under the current fp key, made
// already: the older versions still accepted are tried only when it does
// not match (a member stored before a rotation).
func (s *Service) checkIdentity(ctx context.Context, m memberRow, name string, idNo sensitive.IDNumber, idFP []byte) error {
	if !storedAmong(m.IDNumberFP, [][]byte{idFP}) {
		if ok, err := s.fpMatches(ctx, m.IDNumberFP, DomainIDNumber, []byte(normID(idNo.Reveal()))); err != nil || !ok {
			if err != nil {
				return err
			}
			return &IdentityMismatchError{Field: "id_number"}
		}
	}
	if ok, err := s.fpMatches(ctx, m.NameFP, DomainName, []byte(normName(name))); err != nil || !ok {
		if err != nil {
			return err
		}
		return &IdentityMismatchError{Field: "holder_name"}
	}
	return nil
}

// fpMatches reports whether value's fingerprint under any fp key version
// still accepted is stored (true when nothing is stored).
func (s *Service) fpMatches(ctx context.Context, stored []byte, domain string, value []byte) (bool, error) {
	if stored == nil {
		return true, nil
	}
	fps, err := s.vault.Fingerprints(ctx, domain, value)
	if err != nil {
		return false, err
	}
	return storedAmong(stored, fps), nil
}

// storedAmong reports whether the stored fingerprint is one of fps (true
// when nothing is stored).
func storedAmong(stored []byte, fps [][]byte) bool {
	return stored == nil || slices.ContainsFunc(fps, func(fp []byte) bool { return bytes.Equal(fp, stored) })
}
