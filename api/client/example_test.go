package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/quickpay/quickpay/api/client"
)

// Binding a card: quickpay texts the cardholder the bank's code, the
// cardholder gives it to you, you confirm with it.
func ExampleClient() {
	ctx := context.Background()
	qp, err := client.New(client.Config{BaseURL: os.Getenv("QUICKPAY_URL"),
		ClientID: os.Getenv("QUICKPAY_CLIENT_ID"), ClientSecret: os.Getenv("QUICKPAY_CLIENT_SECRET")})
	if err != nil {
		log.Fatal(err)
	}
	user := "user-1001" // your own user id: the member is created when the card is bound
	b, err := qp.CreateBindingWithResponse(ctx, nil, client.CreateBindingRequest{ExternalUserId: &user,
		HolderName: "张三", IdNumber: "110101199003071234", CardNumber: "6222020000000000001", Phone: "13800000000"})
	if err != nil {
		log.Fatal(err)
	}
	otp := "123456" // what the cardholder received
	bound, err := qp.ConfirmBindingWithResponse(ctx, b.JSON201.Id, nil, client.ConfirmBindingRequest{Otp: otp})
	var e *client.Error
	if errors.As(err, &e) && e.Code == "otp_incorrect" {
		fmt.Println("wrong code; tries left:", *e.AttemptsLeft)
		return
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Println("card", *bound.JSON200.CardId)
}

// A monthly withholding mandate of ¥99.00 on a bound card; the member
// consents with the code quickpay texts them.
func ExampleClient_CreateMandateWithResponse() {
	ctx := context.Background()
	qp, err := client.New(client.Config{BaseURL: os.Getenv("QUICKPAY_URL"),
		ClientID: os.Getenv("QUICKPAY_CLIENT_ID"), ClientSecret: os.Getenv("QUICKPAY_CLIENT_SECRET")})
	if err != nil {
		log.Fatal(err)
	}
	amount, day := int64(9900), 5
	m, err := qp.CreateMandateWithResponse(ctx, nil, client.CreateMandateRequest{
		CardId: "card_abcdefghijklmnopqrstuvwx", Reference: "contract-7", AmountType: client.CreateMandateRequestAmountTypeFixed,
		Amount: &amount, Schedule: client.ScheduleRequest{Interval: client.ScheduleRequestIntervalMonth, DayOfMonth: &day,
			StartDate: openapi_types.Date{Time: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := qp.ConfirmMandateWithResponse(ctx, m.JSON201.Id, nil, client.ConfirmMandateRequest{Otp: "654321"}); err != nil {
		log.Fatal(err)
	}
}

// Walking every failed charge of a month; pages are fetched as the loop
// reaches them.
func ExampleClient_Charges() {
	ctx := context.Background()
	qp, err := client.New(client.Config{BaseURL: os.Getenv("QUICKPAY_URL"),
		ClientID: os.Getenv("QUICKPAY_CLIENT_ID"), ClientSecret: os.Getenv("QUICKPAY_CLIENT_SECRET")})
	if err != nil {
		log.Fatal(err)
	}
	failed := client.ListChargesParamsStatusFailed
	from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	for ch, err := range qp.Charges(ctx, client.ListChargesParams{Status: &failed, CreatedGte: &from, CreatedLt: &to}) {
		if err != nil {
			log.Fatal(err)
		}
		if ch.FailureCode != nil {
			fmt.Println(ch.Id, ch.Amount, *ch.FailureCode)
		}
	}
}

// A webhook receiver: verify the raw body before decoding it.
func ExampleVerifyWebhook() {
	secret := os.Getenv("QUICKPAY_WEBHOOK_SECRET") // from PUT /v1/webhook_endpoint
	http.HandleFunc("/quickpay/webhooks", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		if err := client.VerifyWebhook(secret, r.Header.Get(client.SignatureHeader), body, time.Now(), 0); err != nil {
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		// Decode body into a client.Event; deliveries come at least once, so dedupe on its id.
		w.WriteHeader(http.StatusNoContent)
	})
}
