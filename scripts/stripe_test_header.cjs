// Prints a Stripe-Signature header for STRIPE_PAYLOAD made by Stripe's own Node library, so the
// tests check the webhook against the reference implementation, not only against this project.
const Stripe = require("stripe");
const stripe = new Stripe("sk_test_unused");
process.stdout.write(
  stripe.webhooks.generateTestHeaderString({
    payload: process.env.STRIPE_PAYLOAD,
    secret: process.env.STRIPE_WEBHOOK_SECRET,
  }),
);
