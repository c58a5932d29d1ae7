package forge_test

import (
	"fmt"

	"github.com/uuidforge/uuidforge/forge"
)

func ExampleNew() {
	users, err := forge.New("users")
	if err != nil {
		panic(err)
	}
	id, err := users.ID("john@example.com")
	if err != nil {
		panic(err)
	}
	fmt.Println(id)
	// Output: 18f0fded-a579-526d-87df-487a8a60c334
}

func ExampleGenerator_ID_parts() {
	invoices := forge.MustNew("invoices")
	id, _ := invoices.ID("EUR", 12345)
	name, _ := forge.Canonical("EUR", 12345)
	fmt.Printf("%s\n%s\n", name, id)
	// Output:
	// ["EUR",12345]
	// 6c7bc462-4987-5526-bfae-9c4efe86ec53
}

func ExampleGenerator_ID_struct() {
	type Order struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	}
	orders := forge.MustNew("orders")
	a, _ := orders.ID(Order{SKU: "A", Qty: 2})
	b, _ := orders.ID(map[string]any{"qty": 2, "sku": "A"})
	name, _ := forge.Canonical(Order{SKU: "A", Qty: 2})
	fmt.Printf("%s\n%s\n%v\n", name, a, a == b)
	// Output:
	// [{"qty":2,"sku":"A"}]
	// bcdc91de-6e8b-53e5-82dd-36f3d91b8ff0
	// true
}

func ExampleWithSecret() {
	users := forge.MustNew("mycompany.com", forge.WithSecret("s3cr3t"))
	id, _ := users.ID("john@example.com")
	fmt.Println(id, users.Scheme(), int(id.Version()))
	fmt.Println(users) // the secret never appears, only its fingerprint
	// Output:
	// 9e2027c4-28fa-84f1-b6a5-76e95afa120e keyed 8
	// forge.Generator{namespace: cf04bb62-eed1-589c-9900-ac86662dd66f, scheme: keyed, secret: b1399206f8f70041}
}

func ExamplePrefix() {
	invoices := forge.MustNew("invoices")
	id := invoices.MustID("EUR", 12345)
	p := forge.Prefix("INV-EUR", "-", id)
	back, err := forge.Extract(p, "-")
	fmt.Println(p)
	fmt.Println(back == id, err)
	_, err = forge.Extract("INV-garbage", "-")
	fmt.Println(err)
	// Output:
	// INV-EUR-6c7bc462-4987-5526-bfae-9c4efe86ec53
	// true <nil>
	// forge: extract UUID from "INV-garbage" (separator "-"): no valid UUID found
}

func ExampleGenerator_PythonID() {
	// uuid-forge (Python): generate_uuid_only("invoice", config=IDConfig(
	//     Namespace("mycompany.com"), salt="s3cr3t"), region="EUR", number=12345)
	py := forge.MustNew("mycompany.com", forge.WithScheme(forge.SchemePython), forge.WithSecret("s3cr3t"))
	id, _ := py.PythonID("invoice", nil, map[string]any{"region": "EUR", "number": 12345})
	same, _ := py.ID("invoice", forge.Kwargs{"region": "EUR", "number": 12345})
	fmt.Println(id, id == same)
	// Output: e26b5311-223f-5793-9890-bdefaa567c56 true
}
