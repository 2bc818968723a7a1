"use strict";
// Serverless Framework (v3) Node handler for credport's compatibility tests.
// `serverless invoke local` runs it inside serverless's own process, with the default
// credential chain of AWS SDK JS v3; AWS_ENDPOINT_URL_STS is honoured natively.
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");

module.exports.hello = async (event, context) => {
  const out = await new STSClient({}).send(new GetCallerIdentityCommand({}));
  const result = {
    client: "aws-sdk-js-v3-serverless",
    version: require("@aws-sdk/client-sts/package.json").version,
    account: out.Account,
    arn: out.Arn,
  };
  console.log(JSON.stringify(result));
  return result;
};
