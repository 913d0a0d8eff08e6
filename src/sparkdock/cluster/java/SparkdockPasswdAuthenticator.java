package io.sparkdock.auth;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication for the sparkdock SQL endpoint (Spark Thrift Server).
 *
 * <p>Every user name is accepted; the password must equal the value of the environment variable
 * {@code SPARKDOCK_SQL_PASSWORD}, read from the server's environment (never from its command line, which
 * {@code ps} shows). The comparison runs in constant time. When the variable is unset or empty, every
 * login is refused.
 *
 * <p>Enabled with {@code --hiveconf hive.server2.authentication=CUSTOM --hiveconf
 * hive.server2.custom.authentication.class=io.sparkdock.auth.SparkdockPasswdAuthenticator}.
 */
public class SparkdockPasswdAuthenticator implements PasswdAuthenticationProvider {

    /** Name of the environment variable holding the expected password. */
    public static final String PASSWORD_ENV = "SPARKDOCK_SQL_PASSWORD";

    private final byte[] expected;

    /** Reads the expected password from the environment once. */
    public SparkdockPasswdAuthenticator() {
        this(System.getenv(PASSWORD_ENV));
    }

    /** For tests: uses the given expected password (null or empty refuses everything). */
    SparkdockPasswdAuthenticator(String expectedPassword) {
        this.expected = (expectedPassword == null || expectedPassword.isEmpty())
            ? null : expectedPassword.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public void Authenticate(String user, String password) throws AuthenticationException {
        if (expected == null) {
            throw new AuthenticationException(
                "sparkdock: no SQL password is configured (" + PASSWORD_ENV + " is unset); login refused");
        }
        byte[] given = password == null ? new byte[0] : password.getBytes(StandardCharsets.UTF_8);
        // MessageDigest.isEqual is constant-time in the content (Java 7u6+); length is not secret.
        if (!MessageDigest.isEqual(expected, given)) {
            throw new AuthenticationException("sparkdock: invalid user name or password");
        }
    }
}
