// A receiver written against the types openapi-typescript generates from docs/openapi.json
// (ctest openapi_typescript: generate, then tsc --noEmit --strict). If a payload's shape
// changes in the document, this stops compiling.
import type { components, webhooks } from "./labhook-api";

type S = components["schemas"];
export type LabhookEvent =
  | S["BillCreatedEvent"]
  | S["BillCompletedEvent"]
  | S["BillDeletedEvent"]
  | S["ReportCompletedEvent"]
  | S["LeadCreatedEvent"]
  | S["BookingCreatedEvent"]
  | S["TestEvent"];

// The headers every delivery carries (Standard Webhooks).
export type SignatureHeaders =
  webhooks["report.completed"]["post"]["parameters"]["header"];

export function describe(ev: LabhookEvent, h: SignatureHeaders): string {
  const id = `${h["webhook-id"]}@${h["webhook-timestamp"]}`;
  switch (ev.eventType) {
    case "bill.created":
    case "bill.deleted":
      return `${id} ${ev.eventType} ${ev.data.billID}: ${ev.data.billData.testData.length} reports`;
    case "bill.completed":
      return `${id} bill ${ev.data.billID} done, last report at ${ev.data.reportURL}`;
    case "report.completed": {
      const size: number | undefined = ev.data.document?.size;
      return `${id} report ${ev.data.reportID} of ${ev.data.billID} (${size ?? 0} bytes)`;
    }
    case "lead.created":
      return `${id} lead ${ev.data.leadID} ${ev.data.first_name} ${ev.data.contact}`;
    case "booking.created":
      return `${id} booking ${ev.data.bookingID} at ${ev.data.scheduledAt}`;
    case "webhook.test":
      return `${id} test for ${ev.data.subscriptionID}`;
  }
}

// A client call typed from the paths: the subscription answer.
type SubscribeOk =
  components["schemas"]["SubscriptionWithSecret"];
export function secretOf(r: SubscribeOk): string {
  return r.signingSecret + " " + r.subscription.events.join(",");
}
